"""A method defined only for the tests (``L3M_BENCH_METHODS=tests.extra_method``): the minimax trainer
under another name, style and registry entry. The micro DAG trains it per constraint point, evaluates
it and puts it in metrics.csv, the two-reward table, Figure 3 and the cost table, with no file of the
package naming it (tests/test_workflow.py)."""
from methods import registry

registry.register(registry.Method(
    "mm2", "methods.minimax", "sft", "test-only: minimax under a second registry entry",
    reads=("mm", "onpolicy", "constraints", "rewards", "generation"), needs=registry._constraint_rewards,
    grid="constraints", style=("MM (second entry)", "v", "tab:brown")))
