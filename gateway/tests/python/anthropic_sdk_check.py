"""The official Anthropic Python SDK against Starling's /v1/messages.

Usage: anthropic_sdk_check.py BASE_URL MODEL (BASE_URL without /v1).
Exits non-zero with a message on the first check that fails.
"""

import sys

import anthropic

base, model = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
ask = [{"role": "user", "content": "Write a tweet about green tea."}]

msg = client.messages.create(model=model, max_tokens=8, system="You write tweets.", messages=ask, extra_body={"temperature": 0})
assert msg.type == "message" and msg.role == "assistant", msg
assert msg.content[0].type == "text" and msg.content[0].text, msg
assert msg.stop_reason == "max_tokens", msg.stop_reason
assert msg.usage.output_tokens == 8 and msg.usage.input_tokens > 0, msg.usage

with client.messages.stream(model=model, max_tokens=8, system="You write tweets.", messages=ask, extra_body={"temperature": 0}) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
# Greedy (this SDK version takes temperature only as an extra body
# field): the stream says what the JSON answer said.
assert text == msg.content[0].text, (text, msg.content[0].text)
assert final.stop_reason == "max_tokens", final.stop_reason
assert final.usage.output_tokens == 8, final.usage

try:
    client.messages.create(model="no-such-model", max_tokens=4, messages=ask)
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
else:
    raise AssertionError("an unknown model must raise NotFoundError")

try:
    client.messages.create(model=model, max_tokens=4, messages=[{"role": "system", "content": "no"}])
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
else:
    raise AssertionError("a system role inside messages must raise BadRequestError")

print("all checks passed")
