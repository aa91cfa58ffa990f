"""The documents the code cites are in the repository, and every cited section exists."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/(augmentations|evaluation)\.md §(\d+(?:\.\d+)?)")


def _tracked(*patterns):
    out = subprocess.run(["git", "ls-files", *patterns], capture_output=True, text=True,
                         cwd=ROOT).stdout.split()
    return [ROOT / p for p in out]


def test_cited_sections_exist():
    headings = {}
    for name in ("augmentations", "evaluation"):
        text = (ROOT / "docs" / f"{name}.md").read_text()
        headings[name] = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", text, re.M))
    cited = 0
    for path in _tracked("*.py", "*.cu", "*.cuh", "*.md"):
        for doc, section in CITATION.findall(path.read_text()):
            assert section in headings[doc], f"{path}: docs/{doc}.md §{section} does not exist"
            cited += 1
    assert cited >= 20


def test_no_citation_points_outside_the_repository():
    for path in _tracked("*.py", "*.cu", "*.cuh", "*.md", "*.sh"):
        if path.name == "test_docs.py":
            continue
        text = path.read_text()
        for stale in ("augment_spec.md", "robustness_eval.md", "dali_notes"):
            assert stale not in text, f"{path} cites {stale}, which is not in the repository"


def test_setup_py_ships_every_package():
    """A non-editable install (the Docker image) gets every package of the tree."""
    import ast

    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords
          if k.arg in ("packages", "package_dir")}
    folders = {name: Path(*kw["package_dir"].get(name, name.replace(".", "/")).split("/"))
               for name in kw["packages"]}
    for top in ("ipmix_dali", "kernels", "train", "eval"):
        for init in (ROOT / top).rglob("__init__.py"):
            folder = init.parent.relative_to(ROOT)
            assert folder in set(folders.values()) or any(
                folder == f for f in folders.values()), f"setup.py does not ship {folder}"
