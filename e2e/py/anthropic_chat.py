"""Drives an Anthropic Messages endpoint with the official Anthropic Python SDK.

Usage: anthropic_chat.py BASE_URL MODEL [API_KEY]
BASE_URL is the server root (the SDK adds /v1/messages). Runs (a) a plain request, (b) a
stream through `client.messages.stream`, (c) a streamed tool call followed by a second
request handing back the tool result. Prints one JSON object with what the SDK parsed; any
error ends the script with a non-zero status.
"""
import json
import sys

import anthropic

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
}


def plain(client: anthropic.Anthropic, model: str) -> dict:
    message = client.messages.create(
        model=model,
        max_tokens=256,
        messages=[{"role": "user", "content": "Say hello in five words."}],
    )
    return {
        "text": "".join(b.text for b in message.content if b.type == "text"),
        "stop_reason": message.stop_reason,
        "usage": message.usage.model_dump(exclude_none=True),
    }


def streamed(client: anthropic.Anthropic, model: str) -> dict:
    events = []
    text = []
    with client.messages.stream(
        model=model,
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello in five words."}],
    ) as stream:
        for event in stream:
            events.append(event.type)
            if event.type == "text":
                text.append(event.text)
        final = stream.get_final_message()
    return {
        "text": "".join(text),
        "events": events,
        "stop_reason": final.stop_reason,
        "usage": final.usage.model_dump(exclude_none=True),
    }


def tools(client: anthropic.Anthropic, model: str) -> dict:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    with client.messages.stream(
        model=model, max_tokens=256, tools=[WEATHER_TOOL], messages=[question]
    ) as stream:
        for _ in stream:
            pass
        call_message = stream.get_final_message()
    calls = [b for b in call_message.content if b.type == "tool_use"]
    if not calls:
        raise RuntimeError(f"expected a tool_use block, got {call_message.content!r}")
    call = calls[0]

    followup = client.messages.create(
        model=model,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny"}
                ],
            },
        ],
    )
    return {
        "tool_name": call.name,
        "tool_input": call.input,
        "stop_reason": call_message.stop_reason,
        "followup_text": "".join(b.text for b in followup.content if b.type == "text"),
        "followup_stop_reason": followup.stop_reason,
    }


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    api_key = sys.argv[3] if len(sys.argv) > 3 else "sk-ant-client"
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    print(json.dumps({
        "plain": plain(client, model),
        "stream": streamed(client, model),
        "tools": tools(client, model),
    }))


if __name__ == "__main__":
    main()
