"""sbatch text is a pure function of (spec, job dir, profile, python): golden files; profiles from TOML;
Slurm states → fibtui states. No cluster needed. Regenerate goldens with FIBTUI_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from remote.executors.slurm import TERMINAL_STATES, map_state
from remote.profiles import ClusterProfile, load_profile, load_profiles
from remote.sbatch import sbatch_script
from sessions.errors import FibError
from sessions.jobs import TERMINAL

GOLDEN = Path(__file__).parent / "golden"

GPU = ClusterProfile(name="janelia-gpu", partition="gpu_a100", account="cellmap", qos="normal", time="04:00:00",
                     gres="gpu:1", cpus=8, mem="64G",
                     setup=("module load cuda/12.1", "source ~/venvs/fibtui/bin/activate"),
                     python="python", signal_s=300, sbatch_args=("--constraint=a100",))
TRAIN = {"kind": "train", "job_id": "r2-train-1", "iterations": 2000, "threads": 4}
PREDICT = {"kind": "predict", "job_id": "r2-predict-1", "threads": 0}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FIBTUI_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing; run with FIBTUI_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"sbatch text differs from {path}; if intended, FIBTUI_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name,spec,profile,job_dir,python", [
    ("sbatch_train_gpu.sh", TRAIN, GPU, "/groups/cellmap/s1/jobs/r2-train-1", "python"),
    ("sbatch_predict_minimal.sh", PREDICT, ClusterProfile(), "/scratch/s/jobs/r2-predict-1", "/opt/fibtui/bin/python"),
    ("sbatch_train_norequeue.sh", TRAIN, ClusterProfile(name="short", gpus="a100:2", requeue=False, time="30"),
     "/scratch/s/jobs/r2-train-1", "/opt/fibtui/bin/python"),
])
def test_sbatch_golden(name, spec, profile, job_dir, python):
    text = sbatch_script(spec, job_dir, profile, python)
    check_golden(name, text)
    assert sbatch_script(spec, job_dir, profile, python) == text  # pure: same in, same out
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_sbatch_options():
    text = sbatch_script(TRAIN, "/g/s/jobs/r2-train-1", GPU, "python")
    opts = [ln.split(" ", 1)[1] for ln in text.splitlines() if ln.startswith("#SBATCH ")]
    assert "--signal=B:USR1@300" in opts and "--requeue" in opts and "--gres=gpu:1" in opts
    assert "--output=/g/s/jobs/r2-train-1/stdout.log" in opts and "--error=/g/s/jobs/r2-train-1/stderr.log" in opts
    assert "--cpus-per-task=8" in opts  # the profile wins over the spec's threads
    pred = sbatch_script(PREDICT, "/g/s/jobs/r2-predict-1", GPU, "python")
    assert "--signal" not in pred and "exec python -m remote.run" in pred
    assert "--cpus-per-task=4" in sbatch_script(TRAIN, "/g/j", ClusterProfile(), "py")  # else the job's threads
    for kind in ("evaluate", "measure"):  # no network: no GPU requested, the profile's GPU stays free
        text = sbatch_script({"kind": kind, "job_id": f"r2-{kind}-1"}, f"/g/s/jobs/r2-{kind}-1", GPU, "python")
        assert "--gres" not in text and "--gpus" not in text


def test_sbatch_escapes_percent_and_refuses_unsafe_dirs():
    assert "--output=/data/100%%/j/stdout.log" in sbatch_script(PREDICT, "/data/100%/j", ClusterProfile(), "py")
    for bad in ("/data/my session/j", "relative/j", "/data/$(rm -rf ~)/j", "/data/a'b/j"):
        with pytest.raises(FibError, match="absolute path without spaces"):
            sbatch_script(PREDICT, bad, ClusterProfile(), "py")


def test_python_with_spaces_is_quoted():
    text = sbatch_script(PREDICT, "/d/j", ClusterProfile(), "/opt/my env/bin/python")
    assert "exec '/opt/my env/bin/python' -m remote.run \"$job\"" in text


def test_profiles_from_toml(tmp_path):
    cfg = tmp_path / "fibtui.toml"
    cfg.write_text("""
[profiles.gpu]
partition = "gpu"
time = 90
gpus = 1
setup = "module load cuda"
cpus = 4

[profiles.box]
ssh_host = "labbox"
scheduler = "direct"
remote_workdir = "/scratch/me/jobs"
""")
    ps = load_profiles(cfg)
    assert ps["gpu"] == ClusterProfile(name="gpu", partition="gpu", time="90", gpus="1", setup=("module load cuda",),
                                       cpus=4)
    assert ps["box"].scheduler == "direct" and ps["box"].ssh_host == "labbox"
    assert load_profile("gpu", cfg).partition == "gpu"
    with pytest.raises(FibError, match=r"profile 'nope' not found .*fibtui.toml; add a \[profiles.nope\]"):
        load_profile("nope", cfg)


@pytest.mark.parametrize("body,match", [
    ('partiton = "gpu"', r"unknown key\(s\) partiton"),
    ('time = "four hours"', r"time = 'four hours'; use minutes"),
    ('mem = "lots"', "mem = 'lots'"),
    ('cpus = 0', "cpus = 0"),
    ('partition = "gpu; rm -rf ~"', "not a valid Slurm value"),
    ('sbatch_args = ["--constraint=a100 --exclusive"]', "must be one option"),
    ('scheduler = "pbs"', "scheduler = 'pbs'"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, body, match):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[profiles.p]\n{body}\n")
    with pytest.raises(FibError, match=match) as e:
        load_profiles(cfg)
    assert "\n" not in str(e.value) and str(cfg) in str(e.value)


def test_toml_syntax_error_names_the_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[profiles.p\n")
    with pytest.raises(FibError, match="is not valid TOML"):
        load_profiles(cfg)


@pytest.mark.parametrize("slurm,ours", sorted(TERMINAL_STATES.items()))
def test_every_terminal_slurm_state_maps(slurm, ours):
    st = map_state(slurm, "None", None, ClusterProfile(time="01:00:00", mem="8G"), "Killed", "0:9")
    assert st.state == ours and st.state in TERMINAL
    if ours != "COMPLETED":
        assert st.reason


def test_state_reasons():
    p = ClusterProfile(time="01:00:00", mem="8G")
    assert (map_state("TIMEOUT", None, None, p).reason
            == "reached the time limit (01:00:00); raise `time` in the profile")
    assert "out of memory (8G)" in map_state("OUT_OF_MEMORY", None, None, p).reason
    failed = map_state("FAILED", "NonZeroExitCode", {"status": "failed", "error": "ValueError: bad crop"}, p)
    assert failed.reason == "ValueError: bad crop"
    crashed = map_state("FAILED", "NonZeroExitCode", None, p, "Segmentation fault", "139:0")
    assert crashed.reason == "exit code 139:0; NonZeroExitCode; stderr: Segmentation fault"
    assert map_state("CANCELLED by 1001", None, None, p).state == "CANCELLED"
    assert map_state("PENDING", "Resources", None, p) == map_state("PENDING", "Resources", None, p)
    assert map_state("PENDING", "Resources", None, p).reason == "Resources"
    assert map_state("REQUEUED", "None", None, p).state == "PENDING"
    assert map_state("COMPLETING", "None", None, p).state == "RUNNING"
    assert map_state("WEIRD", None, None, p).state == "FAILED"


def test_executors_by_name(tmp_path):
    from remote.executors.named import executor_for

    cfg = tmp_path / "fibtui.toml"
    cfg.write_text('[profiles.gpu]\npartition = "gpu"\n\n[profiles.box]\nssh_host = "labbox"\nscheduler = "direct"\n'
                   'ssh_config = "' + str(tmp_path / "ssh_config") + '"\n')
    (tmp_path / "ssh_config").write_text("Host labbox\n    HostName 127.0.0.1\n    Port 2299\n    User me\n")
    assert executor_for("local").name == "local"
    assert executor_for("slurm").name == "slurm"
    slurm = executor_for("slurm:gpu", cfg)
    assert slurm.name == "slurm:gpu" and slurm.profile.partition == "gpu"
    box = executor_for("ssh:box", cfg)  # no connection yet: it opens on first use
    assert box.name == "ssh:box" and box.scheduler == "direct"
    assert (box.conn.host, box.conn.port, box.conn.user) == ("127.0.0.1", 2299, "me")
    with pytest.raises(FibError, match="needs a profile with ssh_host"):
        executor_for("ssh")
    with pytest.raises(FibError, match="needs a profile with ssh_host"):
        executor_for("ssh:gpu", cfg)
    with pytest.raises(FibError, match="executor 'pbs' is unknown"):
        executor_for("pbs")
    with pytest.raises(FibError, match="profile 'nope' not found"):
        executor_for("slurm:nope", cfg)


# -- prediction as a job array (pure parts)

ARRAY_PROFILE = ClusterProfile(name="janelia-gpu", partition="gpu_a100", account="cellmap", time="04:00:00",
                               gres="gpu:1", cpus=8, mem="64G", setup=("module load cuda/12.1",), python="python",
                               array_tasks=8, array_throttle=4)


def test_sbatch_array_golden():
    from remote.sbatch import sbatch_array_scripts

    arr, fin = sbatch_array_scripts(PREDICT, "/groups/cellmap/s1/jobs/r2-predict-1", ARRAY_PROFILE, "python", 8, 4)
    check_golden("sbatch_predict_array.sh", arr)
    check_golden("sbatch_predict_final.sh", fin)
    assert (arr, fin) == sbatch_array_scripts(PREDICT, "/groups/cellmap/s1/jobs/r2-predict-1", ARRAY_PROFILE,
                                              "python", 8, 4)
    for text in (arr, fin):
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    opts = [ln.split(" ", 1)[1] for ln in arr.splitlines() if ln.startswith("#SBATCH ")]
    assert "--array=0-7%4" in opts and "--gres=gpu:1" in opts
    assert "--output=/groups/cellmap/s1/jobs/r2-predict-1/tasks/%a/stdout.log" in opts  # each task its own logs
    assert '--task "$SLURM_ARRAY_TASK_ID"' in arr
    fopts = [ln.split(" ", 1)[1] for ln in fin.splitlines() if ln.startswith("#SBATCH ")]
    assert not any(o.startswith(("--gres", "--gpus", "--array")) for o in fopts)  # the pyramid needs no GPU
    assert "--finalize" in fin
    # no throttle: a plain range; a literal % in the path is escaped, %a is not
    arr2, _ = sbatch_array_scripts(PREDICT, "/d/100%/j", ClusterProfile(), "py", 3)
    assert "#SBATCH --array=0-2\n" in arr2 and "--output=/d/100%%/j/tasks/%a/stdout.log" in arr2
    with pytest.raises(FibError, match="array tasks"):
        sbatch_array_scripts(PREDICT, "/d/j", ClusterProfile(), "py", 0)


def test_array_profile_keys(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[profiles.p]\narray_tasks = 4\narray_throttle = 2\n")
    p = load_profiles(cfg)["p"]
    assert (p.array_tasks, p.array_throttle) == (4, 2)
    cfg.write_text("[profiles.p]\narray_tasks = 0\n")
    with pytest.raises(FibError, match="array_tasks = 0"):
        load_profiles(cfg)


def test_task_slices_partition_the_blocks():
    from remote.blocks import task_slice

    for n in (1, 5, 8, 13):
        for k in range(1, n + 1):
            got = [i for t in range(k) for i in range(n)[task_slice(n, k, t)]]
            assert got == list(range(n))  # disjoint, complete, in order


@pytest.mark.parametrize("text,secs", [("0:00", 0), ("1:05", 65), ("2:03:04", 7384), ("1-00:00:10", 86410),
                                       ("125", 125), ("INVALID", None), ("", None), ("N/A", None)])
def test_parse_elapsed(text, secs):
    from remote.executors.slurm import parse_elapsed

    assert parse_elapsed(text) == secs


@pytest.mark.parametrize("tres,gpus", [("cpu=1,mem=500M,node=1,billing=1,gres/gpu=2", 2),
                                       ("cpu=8,mem=64G,node=1,gres/gpu:a100=1", 1),
                                       ("cpu=8,gres/gpu=2,gres/gpu:a100=2", 2), ("cpu=1,mem=500M,node=1", 0),
                                       ("", None)])
def test_parse_gpus(tres, gpus):
    from remote.executors.slurm import parse_gpus

    assert parse_gpus(tres) == gpus


@pytest.mark.parametrize("per_node,per_job,nodes,gpus", [("gres:gpu:1", "N/A", "1", 1), ("gres:gpu:a100:2", "N/A", "2", 4),
                                                         ("N/A", "gres:gpu:2", "1", 2), ("N/A", "N/A", "1", 0),
                                                         ("gres/gpu=3", "", "1", 3), ("gres:gpu", "N/A", "1", 1)])
def test_parse_gpu_request(per_node, per_job, nodes, gpus):
    from remote.executors.slurm import parse_gpu_request

    assert parse_gpu_request(per_node, per_job, nodes) == gpus


def test_squeue_rows_key_array_tasks():
    from remote.executors.slurm import SlurmExecutor

    text = ("67 |67 |N/A |PENDING |Resources |0:00 |1 |N/A |gres:gpu:2 |cpu=1,mem=100M,node=1 |\n"
            "68 |68 |1 |PENDING |JobArrayTaskLimit |0:00 |1 |N/A |N/A |cpu=1 |\n"
            "70 |68 |0 |RUNNING |None |1:02 |1 |gres:gpu:1 |N/A |cpu=1,gres/gpu=1 |\n")
    rows = SlurmExecutor._rows(text)
    assert set(rows) == {"67", "68_1", "68_0"}
    assert rows["67"].gpus == 2 and rows["68_0"].gpus == 1 and rows["68_0"].elapsed_s == 62.0
    assert tuple(rows["68_1"]) == ("PENDING", "JobArrayTaskLimit")
