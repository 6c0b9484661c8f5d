"""Regenerate the drawings the README shows, with the project's own command.

    python tools/make_docs_images.py [--check]

They are made from the examples' graphs (the digits MLP as built by
examples/digits_mlp.py, the chain rule of examples/chain_rule.py, the digits
CNN and the unrolled RNN of examples/gallery.py) by ``graphengine render``.
``--check`` compares instead of writing, and exits 1 when a committed drawing
is stale (tests/test_docs_images.py runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make(folder: pathlib.Path) -> list[pathlib.Path]:
    """Write every drawing into ``folder``; return their paths."""
    import graphengine as ge
    from graphengine.cli.main import main as graphengine

    mlp = folder / "digits_mlp.pb"
    _example("digits_mlp").build().save(mlp)
    chain = folder / "chain_rule_grad.pb"
    ge.gradients(_example("chain_rule").build(), "f/y", wrt=["x"]).save(chain)
    gallery = _example("gallery")
    cnn, rnn = folder / "digits_cnn.pb", folder / "text_rnn.pb"
    gallery.build_digits_cnn().save(cnn)
    gallery.build_text_rnn().save(rnn)
    jobs = [
        (mlp, "digits_mlp_forward.svg", ["--view", "forward"]),
        (mlp, "digits_mlp_gradient.svg", ["--view", "gradient"]),
        (chain, "chain_rule.svg", ["--view", "both"]),
        (cnn, "digits_cnn_both.svg", ["--view", "both"]),
        (rnn, "text_rnn_gradient.svg", ["--view", "gradient"]),
    ]
    outputs = []
    for model, image, options in jobs:
        out = folder / image
        with contextlib.redirect_stdout(io.StringIO()):  # its "wrote <temp file>" lines
            code = graphengine(["render", str(model), "-o", str(out), *options])
        if code != 0:
            raise SystemExit(f"rendering {image} failed")
        outputs.append(out)
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for made in make(pathlib.Path(tmp)):
            committed = IMAGES / made.name
            if args.check:
                if not committed.exists() or committed.read_bytes() != made.read_bytes():
                    stale.append(made.name)
            else:
                IMAGES.mkdir(parents=True, exist_ok=True)
                committed.write_bytes(made.read_bytes())
                print(f"wrote {committed.relative_to(ROOT)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python tools/make_docs_images.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
