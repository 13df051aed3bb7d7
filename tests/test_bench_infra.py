"""`fibtui bench infra`: one tiny round through local, Slurm and SSH (the loopback cluster of tests/infra),
with latency, overhead, polling load and cost per round from `[costs]`."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from fibtui import bench_infra
from recorded import make_recorded
from remote.profiles import ClusterProfile, load_costs
from sessions.errors import FibError
from sessions.workspace import open_session

COSTS = '[costs]\ncurrency = "EUR"\ncloud = 2.90\nshared-cluster = 0.45\ndedicated = 1.10\n'
SLURM_CI = dict(partition="debug", time="00:10:00", cpus=1, mem="500M")


def check(r: dict) -> None:
    assert r["latency_s"] is not None and 0 <= r["latency_s"] < r["wall_s"]
    assert 0 < r["compute_s"] < r["wall_s"]
    assert r["overhead_s"] == pytest.approx(r["wall_s"] - r["compute_s"])
    assert r["status_calls"] >= 3 and r["calls_per_min"] == pytest.approx(r["status_calls"] / (r["wall_s"] / 60))
    assert len(r["jobs"]) == 3


def test_local_round_with_costs(tmp_path):
    s = make_recorded(tmp_path)
    (tmp_path / "fibtui.toml").write_text(COSTS)
    proc = run_cli("bench", "infra", "--session", s, "--config", tmp_path / "fibtui.toml", "--out", tmp_path / "b",
                   "--iterations", "4", "--json", check=True)
    res = json.loads(proc.stdout)
    assert res["round"] == 1 and res["iterations"] == 4 and res["currency"] == "EUR"
    (r,) = res["results"]
    assert r["executor"] == "local"
    check(r)
    assert r["priced_as_one_gpu"] and r["gpus"] == 0 and r["billable_gpu_hours"] > 0
    assert r["cost"] == {k: pytest.approx(r["billable_gpu_hours"] * v) for k, v in
                         {"cloud": 2.90, "shared-cluster": 0.45, "dedicated": 1.10}.items()}
    assert (tmp_path / "b" / "0-local" / "session.sqlite").is_file()
    before = open_session(s)
    assert before.db["jobs"].count == 3  # the original session is only read
    before.close()
    cols, rows = bench_infra.rows(res)
    assert cols == ["", "local"] and any(row[0].startswith("cost at cloud (2.9 EUR/GPU-h)") for row in rows)


def test_costs_table_is_checked(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(COSTS)
    assert load_costs(cfg) == {"currency": "EUR", "prices": {"cloud": 2.9, "shared-cluster": 0.45, "dedicated": 1.1},
                               "source": str(cfg)}
    cfg.write_text('[costs]\ncloud = "cheap"\n')
    with pytest.raises(FibError, match=r"costs.cloud = 'cheap'; give a price per GPU-hour"):
        load_costs(cfg)
    cfg.write_text("[profiles.x]\npartition = \"gpu\"\n")
    assert load_costs(cfg)["prices"] == {}


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.ssh
def test_local_slurm_and_ssh_on_loopback(slurm_infra, ssh_infra, shared_tmp):
    """The same round on the three executors, side by side (the session in a directory the SSH user reads)."""
    from remote.executors.local import LocalExecutor
    from remote.executors.slurm import SlurmExecutor
    from remote.executors.ssh import SSHExecutor

    s = make_recorded(shared_tmp)
    remote = shared_tmp / "remote"
    remote.mkdir()
    remote.chmod(0o777)
    exs = [LocalExecutor(), SlurmExecutor(ClusterProfile(name="bench", **SLURM_CI)),
           SSHExecutor(ssh_infra.ssh_host, ssh_config=ssh_infra.ssh_config, known_hosts=ssh_infra.known_hosts,
                       remote_workdir=str(remote), python=ssh_infra.ssh_python or None)]
    ss = open_session(s)
    try:
        res = bench_infra.bench(ss, None, exs, shared_tmp / "bench", iterations=4,
                                costs={"currency": "EUR", "prices": {"cloud": 2.9}, "source": None})
    finally:
        ss.close()
    names = [r["executor"] for r in res["results"]]
    assert names[0] == "local" and names[1].startswith("slurm") and names[2].startswith("ssh")
    for r in res["results"]:
        check(r)
    print(json.dumps(res, indent=1))


def test_no_evaluated_round_is_one_line(tmp_path):
    run_cli("init", tmp_path / "e", check=True)
    proc = run_cli("bench", "infra", "--session", tmp_path / "e", "--out", tmp_path / "b")
    assert proc.returncode == 2 and "no evaluated round" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
