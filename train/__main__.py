"""``presto-train <stage> [args]`` (or ``python -m train <stage> [args]``): run one training or
evaluation command by name, exactly as ``python -m train.<stage> [args]`` runs it."""

from __future__ import annotations

import importlib
import sys

# Command name -> module; each module's main(argv) returns the exit status.
STAGES = {
    "vae": "train.vae", "clap": "train.clap", "base": "train.base", "presto_l": "train.presto_l",
    "presto_s": "train.presto_s", "presto_ls": "train.presto_ls", "m2s": "train.m2s", "export": "train.export",
    "eval": "train.eval", "report": "train.report", "build_corpus": "train.data.build_corpus",
    "resample": "train.data.resample", "inspect_corpus": "train.data.inspect_corpus",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    names = ", ".join(STAGES)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: presto-train STAGE [ARGS ...]\n\nstages: {names}\n"
              "each stage's own --help lists its arguments", file=sys.stderr)
        return 0 if argv else 2
    stage = argv[0].replace("-", "_")
    if stage not in STAGES:
        print(f"error: unknown stage {argv[0]!r}; allowed: {names}", file=sys.stderr)
        return 2
    # Imported by name so that running one stage loads only that stage's code.
    status = importlib.import_module(STAGES[stage]).main(argv[1:])
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
