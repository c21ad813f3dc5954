"""Task types beyond plain generation: one module each (choice, preference, code).

Each module's `execute(ctx, task)` returns `Outcome`s: one per (item, seed, condition) with
its metric values; the runner records them (the shared baseline under every vector at scale
0) and writes them like any other task's."""
