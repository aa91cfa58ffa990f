"""``python -m ipmix_dali.bench.phases``: a dali-cpu batch split into the stage's call and the
time between calls, with each thread group's CPU time per phase."""
import json
import os

import pytest

from ipmix_dali.bench.phases import GROUPS, main, summarize
from ipmix_dali.tools.samples import write_jpeg_tree


def _snap(**ns):
    """A thread snapshot: {(pid, tid): (name, ns)} from name=(pid, tid, ns) keywords."""
    return {(pid, tid): (name.replace("_", " "), n) for name, (pid, tid, n) in ns.items()}


def test_summarize_splits_cpu_by_phase_and_group():
    """Two stage calls (in/out/in/out): the phases are entry->exit and exit->next entry; a
    thread's CPU goes to its group (workers by pid, the stage thread and main by tid, DALI's and
    the crop resize's by name); a thread that appears mid-run counts from zero."""
    ms = 1_000_000
    worker, me, stage, main_tid, dali = 900, 100, 101, 100, 102
    marks = [
        (0.000, "in", _snap(main=(me, main_tid, 0), s=(me, stage, 0), **{"[DALI]_TP0": (me, dali, 0)}),
         stage),
        (0.050, "out", _snap(main=(me, main_tid, 1 * ms), s=(me, stage, 4 * ms),
                             **{"[DALI]_TP0": (me, dali, 2 * ms)}, w=(worker, 901, 90 * ms)),
         stage),
        (0.080, "in", _snap(main=(me, main_tid, 3 * ms), s=(me, stage, 5 * ms),
                            **{"[DALI]_TP0": (me, dali, 30 * ms)}, w=(worker, 901, 90 * ms)),
         stage),
        (0.140, "out", _snap(main=(me, main_tid, 3 * ms), s=(me, stage, 9 * ms),
                             **{"[DALI]_TP0": (me, dali, 30 * ms)}, w=(worker, 901, 200 * ms),
                             x=(me, 103, 6 * ms), **{"crop-resize": (me, 104, 8 * ms)}),
         stage),
    ]
    got = summarize(marks, {worker}, main_tid)
    # stage: 50 + 60 ms over 2 calls; between: 30 ms over 1 (divided by the 2 calls counted)
    assert got["stage"]["wall_ms_per_batch"] == 55.0
    assert got["stage"]["cpu_ms_per_batch"] == {
        "stage workers": 100.0, "stage thread": 4.0, "DALI threads": 1.0,
        "resize threads": 4.0, "main": 0.5, "other": 3.0}
    assert got["stage"]["cores"] == round(112.5 / 55, 2)
    assert got["between"]["wall_ms_per_batch"] == 15.0
    assert got["between"]["cpu_ms_per_batch"] == {
        "stage workers": 0.0, "stage thread": 0.5, "DALI threads": 14.0,
        "resize threads": 0.0, "main": 1.0, "other": 0.0}
    assert set(got["stage"]["cpu_ms_per_batch"]) == set(GROUPS)


@pytest.mark.parametrize("workers", [1, 2])
def test_phases_of_a_real_loader(tmp_path, workers, capsys):
    """The dali-cpu training loader of IPMix + JSD: with 2 workers the executor's CPU is the
    workers' and falls in the stage phase; with 1 it is the stage thread's. No phase uses more
    cores than the machine has."""
    data = write_jpeg_tree(tmp_path / "data", classes=2, per_class=8, size=(300, 240), seed=2)
    out = tmp_path / "phases.json"
    assert main(["--methods", "ipmix", "--jsd", "--workers", str(workers), "--batch-size", "8",
                 "--batches", "4", "--warmup", "2", "--data", data, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "stage-phases" and len(result["rows"]) == 1
    row = result["rows"][0]
    assert (row["method"], row["jsd"], row["workers"]) == ("ipmix", True, workers)
    assert row["threads"] == workers and row["samples_per_s"] > 0
    stage, between = row["phases"]["stage"], row["phases"]["between"]
    cpu = stage["cpu_ms_per_batch"]
    if workers == 2:  # the crops resized on 2 threads of the stage's process
        assert cpu["stage workers"] > 5 * cpu["stage thread"] > 0
        assert cpu["resize threads"] > 0 and between["cpu_ms_per_batch"]["resize threads"] == 0
        assert between["cpu_ms_per_batch"]["stage workers"] < 0.1 * cpu["stage workers"]
    else:
        assert cpu["stage workers"] == cpu["resize threads"] == 0 and cpu["stage thread"] > 0
    cores = len(os.sched_getaffinity(0))
    for phase in (stage, between):
        assert phase["wall_ms_per_batch"] > 0
        assert 0 < phase["cores"] <= cores + 0.2
    assert "ms per batch" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--batches", "1"], "--batches 1: give at least 2 timed batches"),
    (["--methods", "ipmix,cutmix"], "unknown method 'cutmix': choose from"),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
