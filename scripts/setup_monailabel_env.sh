#!/usr/bin/env bash
# Create (or reuse) .venv-monailabel: MONAI Label 0.8.5 with torch 2.14.1 and torchvision 0.29.1, to serve the
# exported bundles (README, "Serve in MONAI Label"). It is separate from .venv because torchvision does not import
# beside the project's torch 2.13.0+cpu. Safe to run again: it rebuilds only when requirements-monailabel.txt or
# this script changed (a stamp file), and a failed build leaves no stamp, so the next run starts afresh.
# Needs Python 3.11 (set PYTHON=/path/to/python3.11 if it is not `python3.11`); MONAILABEL_VENV moves the venv.
# Takes about 2 minutes and 6 GB of disk (torch's CUDA libraries), from pip's indexes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MONAILABEL_VENV:-$root/.venv-monailabel}"
req="$root/requirements-monailabel.txt"
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
pip_version="26.3"
monailabel_version="0.8.5"

fail() {
    echo "error: $*" >&2
    exit 1
}

if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    fail "$py is Python $("$py" -c 'import platform; print(platform.python_version())'); MONAI Label's environment needs Python 3.11 (set PYTHON=...)"
fi
[ -f "$req" ] || fail "$req not found"

stamp="$venv/.requirements.sha256"
want="$(cat "$req" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$venv is up to date (monailabel $monailabel_version)"
    exit 0
fi

start=$(date +%s)
if [ -e "$venv" ]; then
    # an older or half-built environment: start again, so nothing that is no longer pinned stays behind
    [ -f "$venv/pyvenv.cfg" ] || fail "$venv exists and is not a virtual environment; move it away"
    echo "removing the outdated environment $venv"
    rm -rf "$venv"
fi
echo "creating virtual environment $venv"
"$py" -m venv "$venv"
echo '*' > "$venv/.gitignore"  # keep the environment out of git
vpy="$venv/bin/python"
"$vpy" -m pip install --quiet "pip==$pip_version"
echo "installing requirements-monailabel.txt into $venv (torch with its CUDA libraries: several GB)"
# every package pinned and --no-deps: nothing unlisted is pulled in (monailabel's own list holds sam2, whose
# build needs the internet, and an unbounded monai that would become MONAI 1.6)
"$vpy" -m pip install --quiet --no-deps --prefer-binary -r "$req"
"$vpy" -m pip install --quiet --no-deps --prefer-binary "monailabel==$monailabel_version"

# `pip check`, less what is left out on purpose (pip 26's own check stops at itk's wheel tag, so this reads the
# installed metadata directly). Every requirement of every installed package, extras included, must be met.
"$vpy" - <<'EOF'
import sys
from importlib.metadata import distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# MONAI Label 0.8.5 requirements (its own and those of the monai extras it asks for) that neither the server nor
# bundle inference or training import, with the reason
LEFT_OUT = {
    "sam2": "SAM2 models (its build needs the internet; the server runs with --conf sam2 false)",
    "numpymaxflow": "scribbles apps",
    "ninja": "building sam2",
    "einops": "sam2 and other sample apps",
    "pynetdicom": "DIMSE DICOM datastore",
    "scikit-learn": "pathology sample apps",
    "httpx": "not imported by monailabel",
    "expiringdict": "not imported by monailabel (it uses expiring-dict)",
    "gdown": "monai[gdown]: downloads from Google Drive",
    "lmdb": "monai[lmdb]: LMDBDataset",
    "mlflow": "monai[mlflow]: experiment tracking (off unless requested)",
    "openslide-python": "monai[openslide]: pathology whole-slide images",
    "openslide-bin": "monai[openslide]: pathology whole-slide images",
}
# versions that differ from a requirement on purpose: (requirer, requirement) -> reason
DIFFERENT = {
    ("monai[ignite]", "pytorch-ignite"): "MONAI 1.5.2's extra asks 0.4.11; the project runs 0.5.5 (requirements.txt)",
}
installed = {canonicalize_name(d.metadata["Name"]): d for d in distributions()}
problems = []


def check(owner: str, dist, extras: set[str], for_monailabel: bool) -> None:
    for text in dist.requires or []:
        req = Requirement(text)
        envs = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
        if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
            continue
        name = canonicalize_name(req.name)
        if for_monailabel and name in LEFT_OUT:
            continue
        have = installed.get(name)
        if have is None:
            problems.append(f"{owner} requires {req}, which is not installed")
        elif not req.specifier.contains(have.version, prereleases=True):
            if (owner, name) not in DIFFERENT:
                problems.append(f"{owner} requires {req}, but {have.version} is installed")
        elif req.extras:
            for extra in sorted(req.extras):
                check(f"{name}[{extra}]", have, {extra}, for_monailabel)


for name, dist in sorted(installed.items()):
    check(name, dist, set(), name == "monailabel")
if problems:
    sys.exit("unmet requirements in the MONAI Label environment:\n  " + "\n  ".join(sorted(set(problems))))
EOF

# what the server imports at start, and the versions that matter
"$vpy" - <<EOF
import monai, monailabel, numpy, torch, torchvision
import monailabel.app  # the FastAPI app with every endpoint (DICOMweb, DSA, NRRD, skimage, shapely ...)
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

want = {"monailabel": "$monailabel_version", "monai": "1.5.2", "torch": "2.14.1", "torchvision": "0.29.1"}
got = {"monailabel": monailabel.__version__, "monai": monai.__version__, "torch": torch.__version__.split("+")[0],
       "torchvision": torchvision.__version__.split("+")[0]}
assert got == want, f"versions {got} != {want}"
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__}: pydicom-seg needs numpy<2"
print("monailabel", got["monailabel"], "| monai", got["monai"], "| torch", torch.__version__, "| numpy", numpy.__version__)
EOF

echo "$want" > "$stamp"
echo "installed in $(( $(date +%s) - start )) s; $(du -sh "$venv" | cut -f1) on disk"
