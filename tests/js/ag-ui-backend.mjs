#!/usr/bin/env node
// An AG-UI agent backend written with AG-UI's own `@ag-ui/encoder`, for the Rust tests to put
// behind agentgate's `ag-ui` upstream. It listens on 127.0.0.1 (an ephemeral port), prints
// `{"port":N}` as its first stdout line, and answers every POST of a `RunAgentInput` with an
// AG-UI event stream encoded by `EventEncoder`:
//
//   RUN_STARTED (the input's threadId and runId), TEXT_MESSAGE_START / CONTENT… / END with
//   "Echo (encoder, turn N): <last user message>" (N counts the runs of that threadId),
//   RUN_FINISHED.
//
// A message holding "weather" first calls the tool `get_weather` (TOOL_CALL_START / ARGS / END)
// and gives its TOOL_CALL_RESULT. A message holding "die" stops after the first content
// event and destroys the connection: an upstream that dies mid-stream.
//
// Every input received is printed as one stdout line `{"input":{...},"headers":{...}}`, so a
// test can check what agentgate sent.
//
//   node ag-ui-backend.mjs
import { createServer } from 'node:http';
import { EventEncoder } from '@ag-ui/encoder';
import { EventType } from '@ag-ui/core';

const turns = new Map();

function lastUserText(messages) {
  for (const m of [...(messages ?? [])].reverse()) {
    if (m.role !== 'user') continue;
    if (typeof m.content === 'string') return m.content;
    if (Array.isArray(m.content)) {
      return m.content.filter((p) => p.type === 'text').map((p) => p.text).join('');
    }
  }
  return '';
}

/** The answer's text in pieces, split inside multi-byte characters' neighbourhood. */
function pieces(text) {
  const chars = [...text];
  const out = [];
  for (let i = 0; i < chars.length; i += 5) out.push(chars.slice(i, i + 5).join(''));
  return out;
}

const server = createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  let input;
  try {
    input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: `not JSON: ${error.message}` }));
    return;
  }
  process.stdout.write(`${JSON.stringify({ input, headers: req.headers, path: req.url })}\n`);

  const encoder = new EventEncoder({ accept: req.headers.accept });
  res.writeHead(200, { 'content-type': encoder.getContentType() });
  const send = (event) => res.write(encoder.encodeSSE(event));

  const { threadId, runId } = input;
  const turn = (turns.get(threadId) ?? 0) + 1;
  turns.set(threadId, turn);
  const message = lastUserText(input.messages);

  send({ type: EventType.RUN_STARTED, threadId, runId });
  let text = `Echo (encoder, turn ${turn}): ${message}`;
  if (message.includes('weather')) {
    const toolCallId = `call-weather-${turn}`;
    send({
      type: EventType.TOOL_CALL_START,
      toolCallId,
      toolCallName: 'get_weather',
      parentMessageId: `msg-${runId}`,
    });
    send({ type: EventType.TOOL_CALL_ARGS, toolCallId, delta: '{"city":' });
    send({ type: EventType.TOOL_CALL_ARGS, toolCallId, delta: '"Paris"}' });
    send({ type: EventType.TOOL_CALL_END, toolCallId });
    send({
      type: EventType.TOOL_CALL_RESULT,
      messageId: `tool-${runId}`,
      toolCallId,
      content: '{"forecast":"sunny"}',
      role: 'tool',
    });
    text = `Sunny in Paris. ${text}`;
  }
  const messageId = `msg-${runId}`;
  send({ type: EventType.TEXT_MESSAGE_START, messageId, role: 'assistant' });
  for (const delta of pieces(text)) {
    send({ type: EventType.TEXT_MESSAGE_CONTENT, messageId, delta });
    if (message.includes('die')) {
      // Let the first event reach agentgate, then drop the connection mid-stream.
      setTimeout(() => res.socket.destroy(), 50);
      return;
    }
  }
  send({ type: EventType.TEXT_MESSAGE_END, messageId });
  send({ type: EventType.RUN_FINISHED, threadId, runId });
  res.end();
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
