"""The official `openai` Python client, unchanged, against agentgate's `openai` front.

    python openai_front.py BASE_URL KEY

For every model the key may use: Chat Completions and Responses, streaming and not (through
the SDK's own parsing and its accumulating stream helpers), a second turn on each endpoint,
and the errors. Asserts as it goes; prints `ok` at the end (exit 0), or the failure (exit 1).
"""

import sys

from openai import BadRequestError, NotFoundError, OpenAI

WEATHER = "What is the weather in Paris?"


def user(text):
    return [{"role": "user", "content": text}]


def check_model(c, model):
    r = c.chat.completions.create(model=model, messages=user(WEATHER))
    assert r.object == "chat.completion" and r.model == model, r
    text = r.choices[0].message.content
    assert text.endswith("Echo (turn 1): " + WEATHER), text
    assert r.usage.total_tokens >= 0 and r.usage.model_extra["credits"] > 0, r.usage

    raw = c.chat.completions.with_raw_response.create(model=model, messages=user("hi"))
    conversation = raw.headers["x-conversation-id"]
    again = c.chat.completions.create(
        model=model, messages=user("again"), metadata={"conversation_id": conversation}
    )
    assert again.choices[0].message.content == "Echo (turn 2): again", again

    chunks = list(
        c.chat.completions.create(
            model=model,
            messages=user(WEATHER),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({ch.id for ch in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text, streamed

    with c.chat.completions.stream(model=model, messages=user("hi")) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "Echo (turn 1): hi", final

    resp = c.responses.create(model=model, input=WEATHER)
    assert resp.status == "completed" and resp.output_text.endswith(WEATHER), resp
    second = c.responses.create(model=model, input="again", previous_response_id=resp.id)
    assert second.output_text == "Echo (turn 2): again", second

    with c.responses.stream(model=model, input="hi") as s:
        seq = [e.sequence_number for e in s]
        done = s.get_final_response()
    assert seq == list(range(len(seq))), seq
    assert done.output_text == "Echo (turn 1): hi", done


def main(base_url, key):
    c = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
    models = [m.id for m in c.models.list()]
    assert models, "no models"
    for model in models:
        check_model(c, model)
    try:
        c.chat.completions.create(model="no-such-agent", messages=user("x"))
        raise AssertionError("an unknown model was answered")
    except NotFoundError as e:
        assert (e.code, e.type, e.param) == ("model_not_found", "invalid_request_error", "model")
    try:
        c.responses.create(model=models[0], input="x", previous_response_id="resp_nope")
        raise AssertionError("an unknown previous_response_id was answered")
    except BadRequestError as e:
        assert e.param == "previous_response_id", e
    print("ok", len(models))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception as e:  # noqa: BLE001 - the test prints whatever failed
        import traceback

        traceback.print_exc()
        print("failed:", repr(e))
        sys.exit(1)
