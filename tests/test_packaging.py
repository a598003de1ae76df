"""What users install: the wheel and the sdist `scripts/build_wheel.sh` builds from this checkout
hold every file the package reads (the bundled corpus, the labelling page, the stubs); the wheel
needs no glibc newer than 2.17 (manylinux2014) and, installed away from the checkout, trains and
generates from its command line; the core crate, as `cargo package` packs it for Rust programs,
holds every file its build and tests read. The rest of the suite builds from the source tree,
where a file missing from a package is not missed."""

import os
import platform
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def tracked(prefix: str) -> set[str]:
    if not (REPO / ".git").exists():
        pytest.fail("the packaging tests read `git ls-files`: run them from a git checkout")
    out = subprocess.run(["git", "ls-files", prefix], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "WHEEL_TARGET"}  # this machine's wheel
    built = subprocess.run(["bash", "scripts/build_wheel.sh", str(out)], cwd=REPO, capture_output=True, text=True,
                           env={**env, "VIRTUAL_ENV": sys.prefix})  # the build tools go into this environment
    assert built.returncode == 0, built.stderr
    [wheel], [sdist] = out.glob("*.whl"), out.glob("*.tar.gz")
    assert built.stdout.split()[-1] == str(wheel)  # the script names the wheel it built
    return wheel, sdist, built.stdout


def test_the_wheel_serves_every_python_from_3_9_on_glibc_2_17_and_newer(dist):
    wheel, _, log = dist
    assert re.fullmatch(r"ferrolm-[\d.]+-cp39-abi3-manylinux2014_(\w+)\.manylinux_2_17_\1\.whl", wheel.name), wheel.name
    # auditwheel reads the glibc symbol versions the extension links against: none newer than 2.17.
    tag = re.search(r'consistent with the following platform tag: "manylinux_(\d+)_(\d+)_(\w+)"', " ".join(log.split()))
    assert tag, log
    assert (int(tag[1]), int(tag[2])) <= (2, 17) and tag[3] == platform.machine(), tag[0]


def test_the_wheel_holds_every_package_file_and_the_command(dist):
    wheel, *_ = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {name.removeprefix("python/") for name in tracked("python/ferrolm")}
    assert package - names == set()  # the corpus, the page's files, the stubs, py.typed, every module
    assert "ferrolm/_core.abi3.so" in names and "ferrolm/corpora/tinyshakespeare.txt" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "ferrolm=ferrolm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode().replace(" ", "")


def test_the_sdist_holds_what_a_build_needs_and_no_build_output(dist):
    _, sdist, _ = dist
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = tracked("rust") | tracked("python/ferrolm") | {"Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md",
                                                             "LICENSE"}
    assert needed - names == set()
    assert not [n for n in names if n.startswith(("target/", ".venv/")) or n.endswith(".so")]


def test_the_installed_wheel_trains_and_generates_away_from_the_checkout(dist, tmp_path):
    wheel, *_ = dist
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    # numpy and tqdm from this environment; ferrolm only from the wheel (first on the path).
    deps = Path(np.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{deps}"}
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                       timeout=300)
    where = run("-c", "import ferrolm, ferrolm.label.server as s; print(ferrolm.__file__); print(s.STATIC)")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    trained = run("-m", "ferrolm", "pretrain", "--max-iters", "20", "--eval-interval", "10", "--eval-iters", "1",
                  "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--no-progress", "--out", "m")
    assert trained.returncode == 0, trained.stderr
    assert "step 20" in trained.stdout and (tmp_path / "m" / "model.safetensors").exists()
    sample = run("-m", "ferrolm", "generate", "m", "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "1")
    assert sample.returncode == 0 and sample.stdout.startswith("ROMEO:") and len(sample.stdout) > 20, sample


def test_the_core_crate_packs_every_file_it_reads():
    listed = subprocess.run(["cargo", "package", "-p", "ferrolm", "--list", "--allow-dirty"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    crate = REPO / "rust" / "ferrolm"
    sources = {name.removeprefix("rust/ferrolm/") for name in tracked("rust/ferrolm")}
    assert sources - set(listed) == set()
    assert {"README.md", "LICENSE"} <= set(listed)  # crates.io shows the one; MIT asks for the other
    # include_str!/include_bytes! paths (the README doctest) must stay inside the package.
    for name in (n for n in listed if n.endswith(".rs")):
        for included in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', (crate / name).read_text()):
            inside = os.path.normpath(os.path.join(os.path.dirname(name), included))
            assert inside in listed, f"{name} includes {included}, which the package does not hold"
