"""Drives clawkeep's proxy with the official `anthropic` SDK, as an agent would.

Run by crates/proxy/tests/sdk.rs with a cleared environment holding only
CLAWKEEP_PROXY_URL and CLAWKEEP_TOKEN (the agent's clawkeep JWT): the SDK is
given that token and nothing else, and no provider key exists in this
process to print. Prints one JSON object of what the SDK returned.
"""

import json
import os
import sys

import anthropic

PROXY = os.environ["CLAWKEEP_PROXY_URL"]
TOKEN = os.environ["CLAWKEEP_TOKEN"]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}
ASK = [{"role": "user", "content": "Say hello."}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
MODEL = "claude-sonnet-4"


def usage(u):
    return {"input": u.input_tokens, "output": u.output_tokens}


def tool_use(message):
    block = next(b for b in message.content if b.type == "tool_use")
    return {"stop_reason": message.stop_reason, "name": block.name, "input": block.input, "usage": usage(message.usage)}


def main():
    # The SDK holds the clawkeep token as its "API key" (sent as x-api-key).
    assert TOKEN.count(".") == 2 and not TOKEN.startswith("sk-"), "expected a JWT, not a provider key"
    client = anthropic.Anthropic(api_key=TOKEN, base_url=PROXY, max_retries=0, timeout=30.0)
    out = {"sdk": "anthropic " + anthropic.__version__}

    m = client.messages.create(model=MODEL, max_tokens=100, messages=ASK)
    out["chat"] = {"content": m.content[0].text, "stop_reason": m.stop_reason, "usage": usage(m.usage)}

    pieces = []
    with client.messages.stream(model=MODEL, max_tokens=100, messages=ASK) as stream:
        for text in stream.text_stream:
            pieces.append(text)
        final = stream.get_final_message()
    out["stream"] = {
        "pieces": pieces,
        "text": "".join(pieces),
        "final_text": final.content[0].text,
        "stop_reason": final.stop_reason,
        "usage": usage(final.usage),
    }

    m = client.messages.create(model=MODEL, max_tokens=100, messages=ASK_WEATHER, tools=[WEATHER_TOOL])
    out["tool"] = tool_use(m)

    # The SDK's stream accumulates the input_json_delta pieces into `input`.
    deltas = 0
    with client.messages.stream(model=MODEL, max_tokens=100, messages=ASK_WEATHER, tools=[WEATHER_TOOL]) as stream:
        for event in stream:
            if event.type == "input_json":
                deltas += 1
        final = stream.get_final_message()
    out["tool_stream"] = dict(tool_use(final), input_deltas=deltas)

    out["count_tokens"] = client.messages.count_tokens(model=MODEL, messages=ASK).input_tokens

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
