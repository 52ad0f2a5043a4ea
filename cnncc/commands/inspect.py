"""cnncc inspect MODEL: what each optimization pass did, why edges were not fused, the graph
after any pass, Graphviz pictures and a one-page HTML report."""
from __future__ import annotations

from pathlib import Path

from cnncc.commands import add_conv_algorithm, add_layout, add_dynamic_batch, add_model_args, add_precision


def add(sub):
    p = sub.add_parser("inspect", help="show what every optimization pass did to a model")
    p.add_argument("model", help="DSL .py file, .onnx file or a saved module folder")
    add_dynamic_batch(p)
    p.add_argument("--opt", type=int, default=2, choices=(0, 1, 2), help="optimization level (default 2)")
    p.add_argument("--passes", default=None, metavar="A,B", help="run exactly these passes, in this order")
    p.add_argument("--disable", default="", metavar="A,B", help="skip these passes")
    p.add_argument("--size", type=int, default=None, help="input size for DSL models whose model() takes size=")
    add_model_args(p)
    p.add_argument("--batch", type=int, default=None, help="also show byte counts at this batch size")
    p.add_argument("--after", default=None, metavar="PASS", help="print the graph as it stood after PASS "
                   "('input' for the graph before any pass)")
    p.add_argument("--why-not", action="store_true", help="list every unfused producer -> consumer edge with its reason")
    p.add_argument("--groups", action="store_true", help="list fused groups with the bytes each saves")
    p.add_argument("--dot", default=None, metavar="DIR", help="write Graphviz DOT per pass (and SVG/PNG with dot)")
    p.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--no-kernels", action="store_true", help="do not compile kernels for the HTML report")
    p.add_argument("--cuda", action="store_true",
                   help="compile the CUDA kernels with NVRTC (no GPU needed) and list registers, shared memory, "
                        "spills and theoretical occupancy per kernel on sm_90")
    add_precision(p,
                   help="with --cuda: the convolution arithmetic (default fp32)")
    add_conv_algorithm(p)
    add_layout(p)
    return p


def _load(args):
    from cnncc.commands import batch_of, model_kwargs
    from cnncc.compiler import load_model

    kwargs = model_kwargs(args)
    if args.size is not None and str(args.model).endswith(".py"):
        kwargs["size"] = args.size
    return load_model(args.model, batch=batch_of(args), model_args=kwargs)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def run(args) -> int:
    import cnncc
    from cnncc import report

    graph = _load(args)
    from cnncc.compiler import fuse_balance, layout_register, layout_vector

    vector = 0 if args.cuda else layout_vector(args.layout, "c")   # what compile() would give the C target
    opt = cnncc.optimize(graph, opt_level=args.opt, passes=_names(args.passes), disable=_names(args.disable) or (),
                         layout_vector=vector, fuse_balance=fuse_balance("cuda" if args.cuda else "c"),
                         layout_register=0 if args.cuda else layout_register(args.layout, "c"))
    if args.after:
        print(opt.pass_report.snapshot(args.after))
        return 0
    print(f"{graph.name}: {len(graph)} nodes -> {len(opt)} after opt level "
          f"{args.opt if args.passes is None else 'custom'}")
    print(report.pass_table(opt))
    for line in report.memory_lines(opt, args.batch) + report.traffic_lines(opt, args.batch):
        print(line)
    if not args.cuda:      # the C target's convolution algorithms and scratch; --cuda shows the CUDA kernels instead
        for line in report.workspace_lines(opt, args.conv_algorithm, args.batch):
            print(line)
        print()
        print(report.conv_algorithm_table(opt, args.conv_algorithm))
        print()
        print(report.layout_lines(opt))
    if args.groups:
        print()
        print(report.groups_table(opt, batch=args.batch or 1))
    if args.why_not:
        lines = report.why_not_lines(opt)
        print(f"\nwhy not fused ({len(lines)} edges):")
        for line in lines:
            print("  " + line)
    if args.dot:
        from cnncc.report_dot import has_dot, write_dot_files

        paths = write_dot_files(opt, args.dot)
        extra = "" if has_dot() else " (Graphviz 'dot' not found: DOT only)"
        print(f"wrote {len(paths)} files to {args.dot}{extra}")
    if args.cuda:
        from cnncc.codegen.lower import lower_program
        from cnncc.gpu_predict import format_resources, resource_rows
        from cnncc.runtime.nvrtc import kernel_resources
        from cnncc.runtime.cuda import render

        program = lower_program(opt)
        program.precision = args.precision
        rendered = render(program)
        rows = resource_rows(program, rendered, kernel_resources(rendered.source))
        print()
        print(format_resources(rows, f"CUDA kernels for sm_90 at precision {args.precision} (NVRTC ptxas report; "
                                     f"occupancy is theoretical, from registers, shared memory and block size):"))
    if args.html:
        from cnncc.report_html import write_html

        path = write_html(opt, Path(args.html), with_kernels=not args.no_kernels, batch=args.batch or 1)
        print(f"wrote {path}")
    return 0
