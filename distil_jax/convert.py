"""Command line for moving weights between Hugging Face and distil_jax.

python -m distil_jax.convert init-student --teacher HF_DIR_OR_NAME --out DIR [--layers 0,2,4,7,9,11]
    Writes a DistilBERT student initialised from a BERT teacher as a
    transformers-loadable directory (config, weights and the teacher's tokenizer).

python -m distil_jax.convert export --workdir DIR [--step N] --out HF_DIR [--push_to_hub REPO]
    Exports the student of a training run's checkpoint (the latest, or step N).
"""

from __future__ import annotations

import argparse
import sys

from distil_jax import hf


def parse_layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--layers {text!r}: expected comma-separated integers") from None


def init_student_command(args) -> str:
    teacher_dir = hf.resolve_model_dir(args.teacher)
    teacher_cfg, teacher_params = hf.load_pretrained(teacher_dir)
    if teacher_cfg.arch != "bert":
        raise ValueError(
            f"{args.teacher}: the teacher must be a BERT model, got {teacher_cfg.arch}"
        )
    student_cfg, student_params, _ = hf.init_student(
        teacher_cfg, teacher_params, parse_layers(args.layers)
    )
    out = hf.save_pretrained(student_cfg, student_params, args.out, tokenizer_dir=teacher_dir)
    print(f"wrote a {student_cfg.num_layers}-layer DistilBERT student to {out}")
    return out


def export_command(args) -> str:
    from distil_jax import export  # local: pulls in orbax and the trainer's state

    out = export.export_from_workdir(args.workdir, args.out, step=args.step)
    print(f"exported the student of {args.workdir} to {out}")
    if args.push_to_hub:
        print(f"uploaded to {hf.push_to_hub(out, args.push_to_hub)}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distil_jax.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser(
        "init-student", help="initialise a DistilBERT student from a BERT teacher"
    )
    init.add_argument("--teacher", required=True, help="HF directory or Hub name of the teacher")
    init.add_argument("--out", required=True, help="directory to write the student to")
    init.add_argument(
        "--layers",
        help="teacher layers to copy, e.g. 0,2,4,7,9,11 (default: "
        "half the depth, spread evenly, first and last included)",
    )
    exp = sub.add_parser("export", help="export a trained student as a transformers directory")
    exp.add_argument("--workdir", required=True, help="the training run's workdir")
    exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    exp.add_argument("--out", required=True, help="directory to write the student to")
    exp.add_argument("--push_to_hub", default=None, help="Hub repository id to upload to")
    args = parser.parse_args(argv)
    try:
        if args.command == "init-student":
            init_student_command(args)
        else:
            export_command(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
