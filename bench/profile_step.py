"""Where one TRADES train step spends its time: XLA's thread time by kind of operation.

    python -m bench.profile_step --width 4 [--trace-dir /tmp/trace]

Compiles the step as bench.trades_step does, runs it once to warm up, then traces one step with
`jax.profiler` and sums the duration of every XLA operation the trace records on the device's
threads, grouped by what the operation does (from the compiled module: a fusion that runs a
convolution counts as convolution, one that only moves data as data movement, and so on).
Prints one JSON line: wall and CPU seconds of the traced step, the cores kept busy, and each
group's milliseconds and share of the XLA thread time.
"""
import argparse
import collections
import glob
import re
import tempfile
import time

import jax
from jax.profiler import ProfileData

from bench import harness, trades_step
from robustwidth import parallel

BENCH = "profile_step"
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply)=%([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
_DATA_MOVEMENT = {"copy", "transpose", "bitcast", "concatenate", "slice", "pad", "reshape",
                  "broadcast", "parameter", "constant", "dynamic-slice", "dynamic-update-slice",
                  "gather", "tuple", "get-tuple-element"}
# Events that contain other operations (control flow) or are the runtime's own waits would
# count time twice.
_CONTAINERS = {"while", "conditional", "call"}


def operation_kinds(hlo_text: str) -> dict[str, str]:
  """Each operation of a compiled module (by the name the profiler records) → what it does,
  judged from the operations it runs itself and in the computations it calls."""
  computation_ops, own_op, calls, computation = {}, {}, {}, None
  for line in hlo_text.splitlines():
    if (header := _COMPUTATION.match(line)) and line.rstrip().endswith("{"):
      computation = header.group(1)
      computation_ops[computation] = set()
    elif instruction := _INSTRUCTION.match(line):
      name, op = instruction.groups()
      own_op[name] = op
      calls[name] = _CALLS.findall(line)
      if computation:
        computation_ops[computation].add(op)
  kinds = {}
  for name, op in own_op.items():
    if op in _CONTAINERS:
      continue
    ops = {op}.union(*(computation_ops.get(c, set()) for c in calls[name]))
    kinds[name] = ("convolution" if "convolution" in ops else
                   "matrix product" if "dot" in ops else
                   "reduction" if ops & {"reduce", "reduce-window"} else
                   "data movement" if ops <= _DATA_MOVEMENT else "element-wise")
  return kinds


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  harness.model_arguments(parser)
  parser.add_argument("--trace-dir", default=None, help="keep the trace here (TensorBoard)")
  args = parser.parse_args(argv)
  harness.configure_threads(args)
  config = harness.config_for(args)
  graphdef, params, model_state, _ = harness.models(args, config, harness.torch_device())
  batch, _, _ = harness.data(args, "cpu")
  compiled, state, mesh, _, _ = trades_step.compile_step(args, config, graphdef, params,
                                                         model_state)
  batch = parallel.put_batch(batch, mesh)
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="profile_step_")
  with jax.profiler.trace(trace_dir):
    wall, cpu = time.perf_counter(), time.process_time()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  trace = ProfileData.from_file(
      glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
  kinds = operation_kinds(compiled.as_text())
  by_kind = collections.Counter()
  for plane in trace.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in kinds:
          by_kind[kinds[event.name]] += event.duration_ns / 1e6
  total = sum(by_kind.values())
  harness.emit({"bench": BENCH, "depth": args.depth, "width": args.width, "batch": args.batch,
                "dtype": args.dtype, **harness.machine(args.dtype), "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3), "cores_busy": round(cpu / wall, 2),
                "xla_thread_ms": round(total, 1), "trace_dir": trace_dir,
                "by_kind": {kind: {"ms": round(ms, 1), "share": round(ms / total, 3)}
                            for kind, ms in by_kind.most_common()}})


if __name__ == "__main__":
  main()
