"""Graph passes (one per file) and the PassManager that runs, times, verifies and snapshots them."""
