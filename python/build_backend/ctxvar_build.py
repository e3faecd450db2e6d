# SPDX-License-Identifier: MIT
"""ctxvar_build — the PEP 517 build backend behind `pip install .` and
`pip wheel .` (pyproject.toml names it, with backend-path, so pip needs
nothing from a package index: no setuptools, no wheel).

What a wheel holds
------------------
The binding links the shared libctxvar, the same core C code links, so the
wheel ships one:

    _ctxvar.<EXT_SUFFIX>              the extension, RUNPATH $ORIGIN/ctxvar/_lib
    ctxvar/__init__.py, futures.py    the package
    ctxvar/_lib/libctxvar.so.<ABI>    the core (named by its SONAME)
    ctxvar/include/...                its headers (ctxvar.h, ctxvar/host.h,
                                      ctxvar/pool.h, ctxvar/version.h: what
                                      libctxvar holds): a C extension compiled with
                                      ctxvar.get_include() and linked with
                                      ctxvar.get_library_dir()'s libctxvar
                                      shares the core with the binding
    ctxvar-<version>.dist-info/       METADATA, WHEEL, top_level.txt, RECORD

How it is built: CMake (>= 3.21) and a C11 compiler, as for the C library:
the top-level CMakeLists.txt configured in a temporary directory with the
tests, benchmark and demo off, the interpreter that runs pip as the binding's
only interpreter, and the install RUNPATH built in; then the targets `ctxvar`
and `ctxvar_python`.  config_settings: {"jobs": N} (default: CPU count),
{"cmake-args": "..."} (extra configure arguments, space separated).

Hooks: build_wheel, build_sdist, get_requires_for_build_wheel/_sdist,
prepare_metadata_for_build_wheel.  No editable installs (use PYTHONPATH on a
CMake build tree, as the tests do).
"""

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "ctxvar"
SUMMARY = ("Context variables for C and Python: contextvars semantics (asyncio "
           "included) on one core shared with C code")


def _version():
    with open(os.path.join(ROOT, "include", "ctxvar", "version.h")) as f:
        m = re.search(r'#define CTX_VERSION_STRING "([^"]+)"', f.read())
    if not m:
        raise RuntimeError("ctxvar_build: no CTX_VERSION_STRING in include/ctxvar/version.h")
    return m.group(1)


def _tag():
    major, minor = sys.version_info[:2]
    impl = "cp" if sys.implementation.name == "cpython" else sys.implementation.name[:2]
    interp = f"{impl}{major}{minor}"
    soabi = sysconfig.get_config_var("SOABI") or ""
    m = re.match(r"cpython-(\d+)([a-z]*)", soabi)
    abi = f"cp{m.group(1)}{m.group(2)}" if m else "none"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{interp}-{abi}-{plat}"


def _metadata():
    readme = ""
    try:
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
    except OSError:
        pass
    return (f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {_version()}\n"
            f"Summary: {SUMMARY}\nRequires-Python: >=3.8\n"
            f"Description-Content-Type: text/markdown\n\n{readme}")


def _dist_info():
    return f"{NAME}-{_version()}.dist-info"


# ---- PEP 517 hooks ----

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    path = os.path.join(metadata_directory, _dist_info())
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    return _dist_info()


def _run(cmd, log):
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        log.flush()
        log.seek(0)
        sys.stderr.write(log.read()[-8000:])
        raise RuntimeError(f"ctxvar_build: {cmd[0]} failed ({r.returncode})")


def _build(build_dir, config_settings):
    settings = config_settings or {}
    jobs = str(settings.get("jobs") or os.cpu_count() or 2)
    extra = str(settings.get("cmake-args") or "").split()
    cmake = shutil.which("cmake")
    if not cmake:
        raise RuntimeError("ctxvar_build: cmake (>= 3.21) is needed (Debian: apt-get install cmake)")
    with tempfile.TemporaryFile("w+") as log:
        _run([cmake, "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
              "-DCTX_BUILD_TESTS=OFF", "-DCTX_BUILD_BENCH=OFF", "-DCTX_BUILD_DEMO=OFF",
              "-DCTX_WERROR=OFF", f"-DPython3_EXECUTABLE={sys.executable}",
              "-DCTXVAR_PYTHON_EXTRA=", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", *extra], log)
        _run([cmake, "--build", build_dir, "-j", jobs, "--target", "ctxvar", "ctxvar_python"], log)


def _soname(path):
    """The SONAME of a shared library, read from its dynamic section."""
    try:
        out = subprocess.run(["objdump", "-p", path], capture_output=True, text=True).stdout
        m = re.search(r"SONAME\s+(\S+)", out)
        if m:
            return m.group(1)
    except OSError:
        pass
    return None


# The headers of what libctxvar holds (the core and the pool); the other
# modules are libraries of their own, not shipped.
HEADERS = ("ctxvar.h", "ctxvar/version.h", "ctxvar/host.h", "ctxvar/pool.h")


def _files(build_dir):
    """(path in the wheel, file on disk) for everything the wheel holds."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    ext = os.path.join(build_dir, "src", "python", "_ctxvar" + suffix)
    if not os.path.exists(ext):
        raise RuntimeError(f"ctxvar_build: {ext} was not built")
    lib = os.path.realpath(os.path.join(build_dir, "libctxvar.so"))
    soname = _soname(lib) or os.path.basename(lib)
    files = [("_ctxvar" + suffix, ext), (f"ctxvar/_lib/{soname}", lib)]
    package = os.path.join(ROOT, "python", "ctxvar")
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            files.append((f"ctxvar/{name}", os.path.join(package, name)))
    for rel in HEADERS:
        files.append((f"ctxvar/include/{rel}", os.path.join(ROOT, "include", rel)))
    return files


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [path, f"sha256={digest}", str(len(data))]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    tag = _tag()
    wheel_name = f"{NAME}-{_version()}-{tag}.whl"
    with tempfile.TemporaryDirectory(prefix="ctxvar-build-") as build_dir:
        _build(build_dir, config_settings)
        dist = _dist_info()
        records = []
        target = os.path.join(wheel_directory, wheel_name)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as whl:
            def add(path, data, mode=0o644):
                info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (mode | 0o100000) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                whl.writestr(info, data)
                records.append(_record_line(path, data))

            for path, src in _files(build_dir):
                with open(src, "rb") as f:
                    data = f.read()
                add(path, data, 0o755 if path.endswith(".so") or ".so." in path else 0o644)
            add(f"{dist}/METADATA", _metadata().encode())
            add(f"{dist}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: ctxvar_build\n"
                                  f"Root-Is-Purelib: false\nTag: {tag}\n").encode())
            add(f"{dist}/top_level.txt", b"_ctxvar\nctxvar\n")
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerows(records)
            writer.writerow([f"{dist}/RECORD", "", ""])
            info = zipfile.ZipInfo(f"{dist}/RECORD", date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o644 | 0o100000) << 16
            whl.writestr(info, out.getvalue())
    return wheel_name


SDIST_PARTS = ("CMakeLists.txt", "ctxvar.pc.in", "README.md", "pyproject.toml", "cmake",
               "include", "src", "python", "docs")


def build_sdist(sdist_directory, config_settings=None):
    base = f"{NAME}-{_version()}"
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for part in SDIST_PARTS:
            path = os.path.join(ROOT, part)
            if os.path.exists(path):
                tar.add(path, arcname=f"{base}/{part}",
                        filter=lambda t: None if "__pycache__" in t.name else t)
        data = _metadata().encode()
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return name
