"""Build script: compiles every ``src/fastgossip/*.pyx`` to a C extension.

Cython and a C compiler are required. A build that lacks either fails with a
message saying what to install; fastgossip never installs a silent pure-Python
package (set ``FASTGOSSIP_NO_EXTENSIONS=1`` at *run* time to use the twins).

Build switches (environment variables):
  FASTGOSSIP_DEBUG=1     compile with line tracing and -O0 -g (for coverage / gdb)
  FASTGOSSIP_ANNOTATE=1  write Cython's HTML annotation next to each .pyx
  FASTGOSSIP_ONLY=a,b    build only these modules (e.g. _codec_c), for development
"""

import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - exercised only on broken build envs
    sys.exit(
        "fastgossip: building needs Cython >= 3.0. Install it with "
        "'pip install cython' (pip does this for you through pyproject.toml "
        "unless build isolation is turned off)."
    )

DEBUG = os.environ.get("FASTGOSSIP_DEBUG") == "1"
ANNOTATE = os.environ.get("FASTGOSSIP_ANNOTATE") == "1"


class BuildExt(build_ext):
    """build_ext that turns a missing compiler into an actionable error."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # DistutilsPlatformError and friends
            raise SystemExit(self._explain(exc)) from exc

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # CCompilerError, DistutilsExecError
            raise SystemExit(self._explain(exc)) from exc

    @staticmethod
    def _explain(exc: Exception) -> str:
        return (
            f"fastgossip: compiling the C extensions failed ({exc}).\n"
            "fastgossip needs a C compiler and the Python headers, for example "
            "'apt-get install gcc python3-dev' on Debian/Ubuntu or the Xcode "
            "command line tools on macOS."
        )


directives = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}
macros = []
if DEBUG:
    directives.update(linetrace=True, profile=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

extra_compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
if sys.platform == "win32":
    extra_compile_args = []

sources = sorted(glob.glob(os.path.join("src", "fastgossip", "*.pyx")))
# FASTGOSSIP_ONLY=_codec_c,_table_c builds a subset (development convenience).
only = [name for name in os.environ.get("FASTGOSSIP_ONLY", "").split(",") if name]
# A module that cimports another's types is rebuilt with it: a stale one would
# read the new struct layout with the old offsets (Cython only warns).
CIMPORTED_BY = {"_codec_c": ("_table_c",)}
only += [dep for name in list(only) for dep in CIMPORTED_BY.get(name, ()) if dep not in only]
if only:
    sources = [s for s in sources if os.path.splitext(os.path.basename(s))[0] in only]
if not sources:
    sys.exit("fastgossip: no .pyx sources found under src/fastgossip")

extensions = cythonize(
    [
        __import__("setuptools").Extension(
            "fastgossip." + os.path.splitext(os.path.basename(src))[0],
            [src],
            define_macros=macros,
            include_dirs=[os.path.join("src", "fastgossip")],  # _codec_c_helpers.h
            extra_compile_args=extra_compile_args,
        )
        for src in sources
    ],
    compiler_directives=directives,
    include_path=[os.path.join("src", "fastgossip")],
    annotate=ANNOTATE,
)

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
