"""``latentrag train tools``: index tools and usage examples, fit the learned stage
(:mod:`latentrag.retrievers.tool_fit`), save the retriever."""

from __future__ import annotations

from latentrag.retrievers.tool_fit import FitConfig, fit_stage, training_batch

__all__ = ["FitConfig", "fit_stage", "main", "training_batch"]


def main(argv: list[str] | None = None) -> int:
    """``latentrag train tools``: index tools and usage examples, fit the learned stage, save the retriever."""
    import argparse
    import json
    from pathlib import Path

    from latentrag.retrievers.tools import ToolRetriever

    p = argparse.ArgumentParser(prog="latentrag train tools", description=main.__doc__)
    p.add_argument("--tools", required=True, help="JSON file: a list of OpenAI or MCP tool schemas")
    p.add_argument("--examples", required=True, help="JSONL file: one {\"query\": ..., \"tools\": [names]} per line")
    p.add_argument("--out", required=True, help="folder for the saved ToolRetriever")
    p.add_argument("--refiner", choices=["auto", "on", "off"], default="auto",
                   help="fit the learned stage: auto (with 20+ examples), on (always), off (never)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    tools = json.loads(Path(args.tools).read_text(encoding="utf-8"))
    examples = [json.loads(line) for line in Path(args.examples).read_text(encoding="utf-8").splitlines()
                if line.strip()]
    choices: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
    r = ToolRetriever.from_tools(tools, examples=examples, refiner=choices[args.refiner],
                                 fit_config=FitConfig(seed=args.seed))
    r.save(args.out)
    print(json.dumps({"tools": len(r), "examples": len(r.examples), "refiner": r.refiner is not None,
                      "out": args.out}))
    return 0
