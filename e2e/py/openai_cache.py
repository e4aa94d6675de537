"""Asks the same question three times through the gateway with the official OpenAI SDK: a
stream (a miss, stored), the same stream again (a hit replayed as a stream) and a plain
request (a hit as a chat.completion). The header x-ai-cache says which.

Usage: openai_cache.py BASE_URL MODEL QUESTION
Prints one JSON object with what the SDK parsed.
"""
import json
import sys

from openai import OpenAI


def streamed(client, model, messages):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, usage, chunks, roles, finish = [], None, 0, [], None
    for chunk in raw.parse():
        chunks += 1
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.role:
                roles.append(delta.role)
            if delta.content:
                text.append(delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage.model_dump()
    return {
        "cache": raw.headers.get("x-ai-cache"),
        "text": "".join(text),
        "chunks": chunks,
        "content_chunks": len(text),
        "roles": roles,
        "finish_reason": finish,
        "usage": usage,
    }


def main() -> None:
    base_url, model, question = sys.argv[1], sys.argv[2], sys.argv[3]
    client = OpenAI(base_url=base_url, api_key="sk-client", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": question}]
    first = streamed(client, model, messages)
    second = streamed(client, model, messages)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    plain = raw.parse()
    print(json.dumps({
        "first": first,
        "second": second,
        "plain": {
            "cache": raw.headers.get("x-ai-cache"),
            "text": plain.choices[0].message.content,
            "finish_reason": plain.choices[0].finish_reason,
            "system_fingerprint": plain.system_fingerprint,
            "usage": plain.usage.model_dump() if plain.usage else None,
        },
    }))


if __name__ == "__main__":
    main()
