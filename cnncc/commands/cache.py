"""cnncc cache info|clear: the on-disk cache of compiled kernels."""
from __future__ import annotations


def add(sub):
    p = sub.add_parser("cache", help="show or clear the compiled-kernel cache ($CNNCC_CACHE_DIR or ~/.cache/cnncc)")
    p.add_argument("action", choices=["info", "clear"])
    return p


def run(args) -> int:
    from cnncc.runtime import cache

    if args.action == "info":
        i = cache.info()
        print(f"cache: {i['path']}\n  {i['entries']} compiled artifacts, {i['bytes'] / 1e6:.1f} MB")
    else:
        n = cache.clear()
        print(f"removed {n} cached artifacts from {cache.cache_dir()}")
    return 0
