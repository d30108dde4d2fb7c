#!/usr/bin/env python3
"""Submit a redraft job, stream its events and save the best image.

The gRPC stubs are generated from ../../proto with grpcio-tools on first
run, into a `generated/` folder beside this script.

    pip install -r requirements.txt
    python3 client.py --orchestrator 127.0.0.1:50050 --prompt "a red circle" --out out
"""

import argparse
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
GENERATED = HERE / "generated"
PROTOS = ["common", "generator", "critic", "orchestrator"]


def generate_stubs() -> None:
    """Compile the redraft.v1 protos into GENERATED unless they are newer."""
    sources = [PROTO_ROOT / "redraft" / "v1" / f"{name}.proto" for name in PROTOS]
    outputs = [GENERATED / "redraft" / "v1" / f"{name}_pb2.py" for name in PROTOS]
    if all(out.exists() for out in outputs) and min(out.stat().st_mtime for out in outputs) >= max(
        src.stat().st_mtime for src in sources
    ):
        return
    GENERATED.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={GENERATED}",
        f"--grpc_python_out={GENERATED}",
        *[str(src) for src in sources],
    ]
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orchestrator", default="127.0.0.1:50050", help="orchestrator host:port")
    parser.add_argument("--prompt", required=True, help="text prompt")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="folder for final.png")
    parser.add_argument("--threshold", type=float, default=0.8, help="critic score in [0, 1] that satisfies the job")
    parser.add_argument("--max-iterations", type=int, default=2, help="iteration limit")
    parser.add_argument("--candidates", type=int, default=2, help="candidates per iteration")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first candidate")
    args = parser.parse_args()

    generate_stubs()
    sys.path.insert(0, str(GENERATED))
    import grpc
    from redraft.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    params = orchestrator_pb2.GenerationParams()
    if args.seed is not None:
        params.seed = args.seed
    spec = orchestrator_pb2.JobSpec(
        prompt=args.prompt,
        params=params,
        policy=orchestrator_pb2.LoopPolicy(
            threshold=args.threshold,
            max_iterations=args.max_iterations,
            candidates_per_iteration=args.candidates,
        ),
    )
    max_bytes = 64 * 1024 * 1024
    options = [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]
    with grpc.insecure_channel(args.orchestrator, options=options) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        finished = None
        try:
            for event in stub.Generate(orchestrator_pb2.SubmitJobRequest(spec=spec)):
                kind = event.WhichOneof("event")
                if kind == "iteration_started":
                    print(f"job {event.job_id}: iteration {event.iteration_started.iteration} started")
                elif kind == "candidate":
                    done = event.candidate
                    score = done.candidate.critique.score
                    print(f"  candidate {done.candidate.index} seed {done.candidate.seed}: score {score:.3f}")
                elif kind == "finished":
                    finished = event.finished
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1

    if finished is None:
        print("error: the stream ended before the job finished", file=sys.stderr)
        return 1
    status = orchestrator_pb2.JobStatus.Name(finished.status)
    print(f"job {finished.id} ended {status} with best score {finished.best_score:.3f}")
    if status not in ("JOB_STATUS_SATISFIED", "JOB_STATUS_EXHAUSTED") or not finished.HasField("best"):
        print(f"error: {finished.error or 'no image'}", file=sys.stderr)
        return 1

    best = finished.best
    iteration = finished.iterations[best.iteration]
    candidate = next(c for c in iteration.candidates if c.index == best.candidate)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "final.png"
    path.write_bytes(candidate.image.png)
    print(f"saved {path} ({candidate.image.width}x{candidate.image.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
