"""Drives clawkeep's proxy with the official `openai` SDK, as an agent would.

Run by crates/proxy/tests/sdk.rs with a cleared environment holding only
CLAWKEEP_PROXY_URL and CLAWKEEP_TOKEN (the agent's clawkeep JWT): the SDK is
given that token and nothing else, and no provider key exists in this
process to print. Prints one JSON object of what the SDK returned.
"""

import json
import os
import sys

import openai

PROXY = os.environ["CLAWKEEP_PROXY_URL"]
TOKEN = os.environ["CLAWKEEP_TOKEN"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "Say hello."}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def usage(u):
    return None if u is None else {"prompt": u.prompt_tokens, "completion": u.completion_tokens, "total": u.total_tokens}


def main():
    # The SDK holds the clawkeep token as its "API key"; it is all it has.
    assert TOKEN.count(".") == 2 and not TOKEN.startswith("sk-"), "expected a JWT, not a provider key"
    client = openai.OpenAI(api_key=TOKEN, base_url=PROXY + "/v1", max_retries=0, timeout=30.0)
    out = {"sdk": "openai " + openai.__version__}

    r = client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=100)
    out["chat"] = {
        "content": r.choices[0].message.content,
        "finish_reason": r.choices[0].finish_reason,
        "usage": usage(r.usage),
    }

    # No stream_options: the proxy asks the provider for usage itself, and
    # the SDK must cope with the extra usage-only chunk it passes through.
    pieces, chunks, seen_usage = [], 0, None
    for chunk in client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=100, stream=True):
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            seen_usage = usage(chunk.usage)
    out["stream"] = {"pieces": pieces, "text": "".join(pieces), "chunks": chunks, "usage": seen_usage}

    r = client.chat.completions.create(model="gpt-4o", messages=ASK_WEATHER, tools=[WEATHER_TOOL], max_tokens=100)
    call = r.choices[0].message.tool_calls[0]
    out["tool"] = {
        "finish_reason": r.choices[0].finish_reason,
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "usage": usage(r.usage),
    }

    # The SDK's streaming helper accumulates the argument deltas itself.
    deltas = 0
    with client.chat.completions.stream(
        model="gpt-4o", messages=ASK_WEATHER, tools=[WEATHER_TOOL], max_tokens=100, stream_options={"include_usage": True}
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas += 1
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    out["tool_stream"] = {
        "finish_reason": final.choices[0].finish_reason,
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "argument_deltas": deltas,
        "usage": usage(final.usage),
    }

    r = client.responses.create(model="gpt-4o", input="Say hi.")
    out["responses"] = {"text": r.output_text, "usage": [r.usage.input_tokens, r.usage.output_tokens]}

    # The SDK asks for base64 and decodes it back to floats.
    r = client.embeddings.create(model="text-embedding-3-small", input=["first", "second"])
    out["embeddings"] = {"vectors": [d.embedding for d in r.data], "usage": r.usage.prompt_tokens}

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
