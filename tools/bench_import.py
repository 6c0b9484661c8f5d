"""Benchmark: time of `import graphengine` and of `graphengine --help`, against
`import numpy` timed in the same run.

Each figure is the fastest of ``--repeat`` fresh interpreters (``python -c``),
interleaved, so the machine's load affects every figure alike.  The interpreter's
own start-up (``python -c pass``) is subtracted; the graphengine import includes
numpy's, which it needs.  The children may write bytecode caches
(``PYTHONDONTWRITEBYTECODE`` is dropped for them) and one untimed round writes
them first, so the figures are those of an installed package's second and later
imports, not of compiling every module from source.

The last line is graphengine's own share, timed inside a child that imported
numpy first (the fastest of the same rounds): it does not depend on subtracting
two noisy figures.  An editable install's finder imports pathlib at start-up,
so the figures here do not show what pathlib would cost a wheel install.

    python tools/bench_import.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CASES = {
    "python -c pass (subtracted)": ["-c", "pass"],
    "import numpy (reference)": ["-c", "import numpy"],
    "import graphengine": ["-c", "import graphengine"],
    "graphengine --help": ["-m", "graphengine", "--help"],
}


#: Prints how long `import graphengine` takes once numpy is imported.
_OWN = (
    "import time, numpy\nstart = time.perf_counter()\nimport graphengine\n"
    "print(time.perf_counter() - start)"
)


def _own_once() -> float:
    out = subprocess.run([sys.executable, "-c", _OWN], check=True, capture_output=True, text=True)
    return float(out.stdout)


def _time_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for case in CASES.values():  # writes the bytecode caches, untimed
        _time_once(case)
    best = dict.fromkeys(CASES, float("inf"))
    own_share = float("inf")
    for _ in range(args.repeat):
        for name, case in CASES.items():
            best[name] = min(best[name], _time_once(case))
        own_share = min(own_share, _own_once())
    base = best.pop("python -c pass (subtracted)")
    numpy_time = best["import numpy (reference)"] - base
    print(f"interpreter start-up: {base * 1e3:.0f} ms (subtracted below)")
    for name, seconds in best.items():
        own = seconds - base
        print(f"{name}: {own * 1e3:.0f} ms ({own / numpy_time:.2f}x import numpy)")
    print(f"import graphengine with numpy already imported: {own_share * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
