"""datatrove 0.10.1's InferenceRunner on a folder of Parquet prompts, as generate_data.py
sets it up (a chat request per row, checkpointed chunks, Parquet out), against an
OpenAI-compatible server it does not start (`server_type="endpoint"`).

    bench/.venv-datatrove/bin/python bench/peers/datatrove_run.py IN_DIR OUT_DIR URL \
        --chunk 500 --concurrency 256 --max-tokens 16 [--limit N] [--model NAME]

Runs in datatrove's own environment (bench/common.py builds it); not imported by dataforge.
"""

import argparse

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.inference.run_inference import InferenceConfig, InferenceRunner
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("url", help="the server's base URL, without /v1")
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--limit", type=int, default=-1)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--temperature", type=float, default=None)
    args = parser.parse_args()

    async def rollout(document, generate):
        result = await generate(
            {
                "messages": [{"role": "user", "content": document.text}],
                "max_tokens": args.max_tokens,
            }
        )
        return {"text": result.text, "finish_reason": result.finish_reason, "usage": result.usage}

    runner = InferenceRunner(
        rollout_fn=rollout,
        config=InferenceConfig(
            server_type="endpoint",
            model_name_or_path=args.model,
            endpoint_url=args.url,
            max_concurrent_generations=args.concurrency,
            default_generation_params={}
            if args.temperature is None
            else {"temperature": args.temperature},
            metric_interval=3600,
        ),
        output_writer=ParquetWriter(
            f"{args.output}/data",
            output_filename="${rank}_${chunk_index}.parquet",
            expand_metadata=True,
        ),
        checkpoints_local_dir=f"{args.output}/checkpoints",
        records_per_chunk=args.chunk,
    )
    LocalPipelineExecutor(
        pipeline=[ParquetReader(args.input, text_key="prompt", limit=args.limit), runner],
        tasks=1,
        logging_dir=f"{args.output}/logs",
    ).run()


if __name__ == "__main__":
    main()
