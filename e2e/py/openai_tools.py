"""Drives an OpenAI-style endpoint through a function-calling round trip with the official
OpenAI Python SDK.

Usage: openai_tools.py BASE_URL MODEL [API_KEY]
Streams a `get_weather` tool call (with stream_options.include_usage) and reassembles it from
the deltas, sends the tool result back and streams the final text, then makes one
non-streaming tool call. Prints one JSON object with what the SDK parsed; any error ends the
script with a non-zero status.
"""
import json
import sys

from openai import OpenAI

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


def streamed_tool_call(client: OpenAI, model: str) -> tuple[dict, str, dict | None]:
    """The tool call reassembled from the deltas, its id, and the usage chunk's usage."""
    calls: dict[int, dict] = {}
    finish_reason, usage = None, None
    stream = client.chat.completions.create(
        model=model,
        messages=[QUESTION],
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
            finish_reason = choice.finish_reason or finish_reason
    if not calls:
        raise RuntimeError("the stream carried no tool call")
    call = calls[min(calls)]
    result = {
        "name": call["name"],
        "arguments": json.loads(call["arguments"]),
        "finish_reason": finish_reason,
    }
    return result, call["id"], usage


def followup_text(client: OpenAI, model: str, call: dict, call_id: str) -> str:
    messages = [
        QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{
                "id": call_id,
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
            }],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18 C and sunny"},
    ]
    text = []
    stream = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], stream=True
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    return "".join(text)


def plain_tool_call(client: OpenAI, model: str) -> dict:
    completion = client.chat.completions.create(
        model=model, messages=[QUESTION], tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    if not choice.message.tool_calls:
        raise RuntimeError(f"expected a tool call, got {choice.message!r}")
    call = choice.message.tool_calls[0]
    return {
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "finish_reason": choice.finish_reason,
    }


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    api_key = sys.argv[3] if len(sys.argv) > 3 else "sk-client"
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    stream_tool, call_id, usage = streamed_tool_call(client, model)
    print(json.dumps({
        "stream_tool": stream_tool,
        "plain_tool": plain_tool_call(client, model),
        "followup_text": followup_text(client, model, stream_tool, call_id),
        "usage": usage,
    }))


if __name__ == "__main__":
    main()
