"""``clipworks export onnx MODEL OUT_DIR``: a thin wrapper over ``clipworks.export.export_onnx_report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import PretrainedArg, err, user_errors

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Export a model to run without PyTorch (ONNX graphs + preprocessing + tokenizer).")


@app.command("onnx")
def onnx(
    model: Annotated[str, typer.Argument(help="Config name, hf-hub:org/repo, or checkpoint path.", show_default=False)],
    out_dir: Annotated[Path, typer.Argument(help="The folder to write (new or empty, unless --force).",
                                            show_default=False)],
    pretrained: PretrainedArg = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write int8 graphs (dynamic quantization) and report "
                                                      "their cosine to fp32.")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset of the graphs.")] = 18,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT_DIR if it is not empty.")] = False,
) -> None:
    """Write OUT_DIR/image.onnx and text.onnx (dynamic batch, any caption length up to the context length), the
    manifest clipworks-onnx.json with the preprocessing and tokenizer, and check the graphs against PyTorch."""
    with user_errors():
        from ..export import export_onnx_report
        from ..export.onnx import require_export
        from .common import load_encoder

        require_export()
        encoder = load_encoder(model, pretrained)
        with err.status(f"exporting to {out_dir}"):
            result = export_onnx_report(encoder, out_dir, int8=int8, opset=opset, force=force)
    package = result.package
    typer.echo(f"wrote {result.path} ({package.embed_dim}-d, opset {package.opset}, image size "
               f"{package.preprocess['image_size']}, context length {package.context_length})")
    for graph in package.graphs.values():
        size = (result.path / graph.file).stat().st_size / 2**20
        typer.echo(f"  {graph.file}: {graph.input} -> {graph.output} ({size:.1f} MiB)")
    for kind, diff in result.max_diff.items():
        typer.echo(f"parity {kind}.onnx: max |onnx - torch| {diff:.2e} (limit 1e-4)")
    if result.int8 is not None:
        for line in result.int8.lines():
            typer.echo(f"int8 {line}")
