"""Drives the gateway with the official OpenAI Python SDK, streaming and not.

Usage: openai_chat.py BASE_URL MODEL [API_KEY]
Prints one JSON object with what the SDK parsed.
"""
import json
import sys

from openai import OpenAI


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    api_key = sys.argv[3] if len(sys.argv) > 3 else "sk-client"
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "Say hello in five words."}]

    plain = client.chat.completions.create(model=model, messages=messages)

    text, usage, chunks = [], None, 0
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage.model_dump()

    print(json.dumps({
        "plain": {
            "text": plain.choices[0].message.content,
            "finish_reason": plain.choices[0].finish_reason,
            "usage": plain.usage.model_dump() if plain.usage else None,
        },
        "stream": {"text": "".join(text), "chunks": chunks, "usage": usage},
    }))


if __name__ == "__main__":
    main()
