"""Code generation: fused groups -> KernelSpecs -> CUDA / C source through jinja2 templates."""
