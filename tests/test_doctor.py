"""`fibtui doctor` and the filesystem check behind its SQLite warning."""

import json

from conftest import run_cli
from sessions.fsinfo import filesystem_type, is_network_fs


def test_filesystem_type_picks_the_longest_mount(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\n"
                      "server:/export /groups/lab nfs4 rw 0 0\n"
                      "lustre@tcp:/scratch /groups/lab/scratch lustre rw 0 0\n")
    assert filesystem_type("/groups/lab/scratch/me/session", str(mounts)) == ("lustre", "/groups/lab/scratch")
    assert filesystem_type("/groups/lab/x", str(mounts)) == ("nfs4", "/groups/lab")
    assert filesystem_type("/groups/labx", str(mounts)) == ("ext4", "/")  # a prefix is not a parent
    assert is_network_fs("nfs4") and is_network_fs("fuse.sshfs") and not is_network_fs("ext4")


def test_doctor_json_reports_every_area(tmp_path):
    proc = run_cli("doctor", "--session", tmp_path, "--json", check=True)
    checks = {c["check"]: c for c in json.loads(proc.stdout)}
    assert {"terminal colours", "session filesystem", "GPU"} <= set(checks)
    assert any(k.startswith("slurm") for k in checks) and any(k.startswith("ssh") for k in checks)
    assert str(tmp_path) in checks["session filesystem"]["detail"]


def test_doctor_reports_a_broken_config(tmp_path):
    (tmp_path / "fibtui.toml").write_text("[profiles.x\n")
    proc = run_cli("doctor", "--json", cwd=tmp_path, check=True)
    config = [c for c in json.loads(proc.stdout) if c["check"] == "config"]
    assert config and config[0]["ok"] is False and "not valid TOML" in config[0]["detail"]
