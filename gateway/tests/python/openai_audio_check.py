"""The official OpenAI Python SDK against Starling's /v1/audio/transcriptions.

Usage: openai_audio_check.py BASE_URL MODEL CLIP EXPECTED_TEXT
Prints "all checks passed" when every check holds; any failure raises.
"""
import sys

import openai

base, model, clip, expected = sys.argv[1:5]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)


def open_clip():
    return open(clip, "rb")


# json (the default): a Transcription object.
with open_clip() as f:
    t = client.audio.transcriptions.create(model=model, file=f)
assert t.text == expected, (t.text, expected)

# text: the SDK returns the body as a string.
with open_clip() as f:
    t = client.audio.transcriptions.create(model=model, file=f, response_format="text")
assert isinstance(t, str) and t.strip() == expected, repr(t)

# srt
with open_clip() as f:
    t = client.audio.transcriptions.create(model=model, file=f, response_format="srt")
assert t.startswith("1\n00:00:00,000 --> "), repr(t)
assert expected in t, repr(t)

# verbose_json with segment timestamps: typed segments.
with open_clip() as f:
    t = client.audio.transcriptions.create(
        model=model, file=f, response_format="verbose_json", timestamp_granularities=["segment"], language="en"
    )
assert t.text == expected and t.language == "english", t
assert t.duration > 3.0 and t.segments and t.segments[0].start == 0.0, t
assert t.segments[0].avg_logprob < 0.0 and 0.0 <= t.segments[0].no_speech_prob <= 1.0, t

# stream: transcript.text.delta events, then transcript.text.done.
with open_clip() as f:
    stream = client.audio.transcriptions.create(model=model, file=f, stream=True)
    deltas, done = [], None
    for event in stream:
        if event.type == "transcript.text.delta":
            deltas.append(event.delta)
        elif event.type == "transcript.text.done":
            done = event.text
assert done == expected and "".join(deltas) == expected, (deltas, done)

# Errors are typed: an unknown model is a NotFoundError, a bad format a BadRequestError.
try:
    with open_clip() as f:
        client.audio.transcriptions.create(model="no-such-model", file=f)
    raise AssertionError("unknown model accepted")
except openai.NotFoundError:
    pass
try:
    client.audio.transcriptions.create(model=model, file=("notes.txt", b"not audio", "text/plain"))
    raise AssertionError("text accepted as audio")
except openai.BadRequestError as e:
    assert "file" in str(e), e

print("all checks passed")
