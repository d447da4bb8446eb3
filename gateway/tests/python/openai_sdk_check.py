"""The official OpenAI Python SDK against a running Starling server.

Usage: python openai_sdk_check.py BASE_URL MODEL
Run by gateway/tests/it/python.rs, which starts the server (two engine slots,
no waiting room) and fails when this exits non-zero. Every check asserts on
the SDK's parsed objects, so a wire-format mistake fails here.
"""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
user = [{"role": "user", "content": "Write a tweet about coffee."}]

# Chat, with usage.
r = client.chat.completions.create(model=model, messages=user, max_tokens=16, seed=5, temperature=0.7)
assert r.object == "chat.completion", r
assert r.model == model
assert r.choices[0].message.role == "assistant"
text = r.choices[0].message.content
assert text, r
assert r.choices[0].finish_reason in ("stop", "length")
assert r.usage.completion_tokens >= 1 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

# The same request streamed with include_usage: same text, usage chunk last.
chunks = list(
    client.chat.completions.create(
        model=model, messages=user, max_tokens=16, seed=5, temperature=0.7,
        stream=True, stream_options={"include_usage": True},
    )
)
assert chunks[0].choices[0].delta.role == "assistant"
assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
assert chunks[-1].choices == [] and chunks[-1].usage == r.usage, chunks[-1]
assert all(c.usage is None for c in chunks[:-1])

# n = 2.
r = client.chat.completions.create(model=model, messages=user, max_tokens=8, n=2, seed=1)
assert [c.index for c in r.choices] == [0, 1], r

# Stop: greedy text cut before its third word.
greedy = dict(model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
              max_tokens=20, temperature=0)
full = client.chat.completions.create(**greedy).choices[0].message.content
word = full.split()[2]
cut = client.chat.completions.create(**greedy, stop=[word])
assert cut.choices[0].finish_reason == "stop", cut
assert cut.choices[0].message.content == full[: full.index(word)], (cut, full, word)

# Logprobs.
r = client.chat.completions.create(model=model, messages=user, max_tokens=6, logprobs=True, top_logprobs=2)
lps = r.choices[0].logprobs.content
assert len(lps) == r.usage.completion_tokens
assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in lps), lps

# Legacy completions and models.
c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
assert c.object == "text_completion" and c.choices[0].text, c
assert [m.id for m in client.models.list().data] == [model]
assert client.models.retrieve(model).id == model

# Errors map to the SDK's exception classes.
try:
    client.chat.completions.create(model=model, messages=user, temperature=5)
    raise AssertionError("temperature 5 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.body["param"] == "temperature", e.body
try:
    client.chat.completions.create(model="no-such-model", messages=user)
    raise AssertionError("unknown model was accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body

# Two long streams hold both slots: the third request is refused at once.
long = dict(model=model, messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=2000, stream=True)
held = [client.chat.completions.create(**long) for _ in range(2)]
for s in held:
    next(iter(s))
try:
    client.chat.completions.create(model=model, messages=user, max_tokens=4)
    raise AssertionError("a full engine accepted a request")
except openai.RateLimitError as e:
    assert int(e.response.headers["retry-after"]) >= 1
for s in held:
    s.close()

print("openai sdk: all checks passed")
