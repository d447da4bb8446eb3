"""The official OpenAI Python SDK's structured outputs and tool calls against Starling's
local model.

Usage: python openai_structured_check.py BASE_URL MODEL
Run by gateway/tests/it/python.rs. `chat.completions.parse` sends the
Pydantic model as a strict JSON schema and parses the answer back into the
model: a wrong schema, a wrong shape or an output that breaks the schema
fails here.
"""

import json
import sys
from typing import List, Literal

import openai
from pydantic import BaseModel, Field

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


class Tweet(BaseModel):
    text: str = Field(max_length=80)
    hashtags: List[str] = Field(max_length=3)
    sentiment: Literal["positive", "neutral", "negative"]
    stars: int = Field(ge=1, le=5)


for seed in range(3):
    r = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Write a tweet about our new coffee grinder."}],
        response_format=Tweet,
        max_tokens=200,
        seed=seed,
        temperature=0.8,
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop", r
    assert isinstance(msg.parsed, Tweet), msg
    assert 1 <= msg.parsed.stars <= 5 and len(msg.parsed.hashtags) <= 3, msg.parsed
    assert Tweet.model_validate_json(msg.content) == msg.parsed

# The streaming helper parses the same way.
with client.chat.completions.stream(
    model=model,
    messages=[{"role": "user", "content": "Rate the grinder."}],
    response_format=Tweet,
    max_tokens=200,
    seed=7,
) as stream:
    final = stream.get_final_completion()
assert isinstance(final.choices[0].message.parsed, Tweet), final

# A tool-calling round trip: the call, its result sent back, an answer.
weather = openai.pydantic_function_tool(
    type("GetWeather", (BaseModel,), {"__annotations__": {"city": str}, "__doc__": "Current weather in a city."})
)
messages = [{"role": "user", "content": "What is the weather in Paris?"}]
r = client.chat.completions.create(model=model, messages=messages, tools=[weather], tool_choice="required", max_tokens=100, seed=1)
msg = r.choices[0].message
assert r.choices[0].finish_reason == "tool_calls", r
call = msg.tool_calls[0]
assert call.type == "function" and call.function.name == "GetWeather" and call.id.startswith("call_"), call
assert isinstance(json.loads(call.function.arguments)["city"], str), call
messages += [msg, {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18}'}]
r = client.chat.completions.create(model=model, messages=messages, tools=[weather], max_tokens=40, seed=1)
assert r.choices[0].message.content or r.choices[0].message.tool_calls, r

# The same call streamed: the SDK's stream helper assembles it.
with client.chat.completions.stream(
    model=model, messages=messages[:1], tools=[weather], tool_choice="required", max_tokens=100, seed=1
) as stream:
    final = stream.get_final_completion()
streamed = final.choices[0].message.tool_calls[0]
assert (streamed.function.name, streamed.function.arguments) == (call.function.name, call.function.arguments), (streamed, call)

print("all checks passed")
