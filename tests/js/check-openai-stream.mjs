#!/usr/bin/env node
// Reads an OpenAI-format answer with the official `openai` Node client, pinned in
// package-lock.json: the bytes are served by a tiny local HTTP server and consumed as a
// client would.
//
//   node check-openai-stream.mjs <kind> <file>
//     kind: chat-stream | responses-stream   (the file is an SSE body)
//           chat-json   | responses-json     (the file is a non-stream JSON body)
//
// Streams are read twice: raw (`create({stream: true})`, every chunk / event) and through the
// SDK's accumulating helpers (`chat.completions.stream()` → `finalChatCompletion()`,
// `responses.stream()` → `finalResponse()`), which throw on inconsistent streams (a chunk
// without a role first, a tool call without id / type / name, an event for a missing output
// index, no finish_reason).
//
// Prints ONE JSON line: {"ok":true,"text","reasoning","toolCalls":[{id,name,arguments}],
// "finishReason"|"status","usage","ids"|"sequence"} or {"ok":false,"error"} (exit 1).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const [kind, path] = process.argv.slice(2);
const body = readFileSync(path);
const isStream = kind.endsWith('-stream');

function emit(obj, code) {
  process.stdout.write(JSON.stringify(obj) + '\n');
  process.exit(code);
}

const timer = setTimeout(() => emit({ ok: false, error: 'timed out after 20 s' }, 1), 20000);

const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, {
      'content-type': isStream ? 'text/event-stream' : 'application/json',
      'x-request-id': 'req_check',
    });
    res.end(body);
  });
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const client = new OpenAI({
  apiKey: 'sk-test',
  baseURL: `http://127.0.0.1:${server.address().port}/v1`,
  maxRetries: 0,
  timeout: 10000,
});

const chatParams = {
  model: 'agent',
  messages: [{ role: 'user', content: 'hi' }],
  stream_options: { include_usage: true },
};
const respParams = { model: 'agent', input: 'hi' };

function fail(msg) {
  throw new Error(msg);
}

async function chatStream() {
  const ids = new Set();
  let text = '';
  let reasoning = '';
  let finishReason = null;
  let usage = null;
  let first = true;
  const stream = await client.chat.completions.create({ ...chatParams, stream: true });
  for await (const chunk of stream) {
    ids.add(chunk.id);
    if (chunk.object !== 'chat.completion.chunk') fail(`object ${chunk.object}`);
    if (typeof chunk.created !== 'number' || typeof chunk.model !== 'string') fail('created/model');
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (first && choice.delta.role !== 'assistant') fail('no role in the first delta');
      first = false;
      text += choice.delta.content ?? '';
      reasoning += choice.delta.reasoning_content ?? '';
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  if (ids.size !== 1) fail(`ids ${[...ids]}`);
  const final = await client.chat.completions.stream(chatParams).finalChatCompletion();
  const message = final.choices[0].message;
  if ((message.content ?? '') !== text) fail('helper text differs');
  if (final.choices[0].finish_reason !== finishReason) fail('helper finish_reason differs');
  return {
    text,
    reasoning,
    finishReason,
    usage,
    ids: [...ids],
    toolCalls: (message.tool_calls ?? []).map((c) => ({
      id: c.id,
      name: c.function.name,
      arguments: c.function.arguments,
    })),
  };
}

function responseSummary(r) {
  const toolCalls = [];
  let reasoning = '';
  for (const item of r.output) {
    if (item.type === 'function_call') {
      toolCalls.push({ id: item.call_id, name: item.name, arguments: item.arguments });
    }
    if (item.type === 'reasoning') {
      for (const c of item.content ?? []) reasoning += c.text;
      for (const c of item.summary ?? []) reasoning += c.text;
    }
  }
  return { text: r.output_text, reasoning, toolCalls, status: r.status, usage: r.usage, id: r.id };
}

async function responsesStream() {
  const stream = await client.responses.create({ ...respParams, stream: true });
  const sequence = [];
  let text = '';
  let final = null;
  for await (const event of stream) {
    if (event.sequence_number !== sequence.length) fail(`sequence_number ${event.sequence_number}`);
    sequence.push(event.type);
    if (event.type === 'response.output_text.delta') text += event.delta;
    if (['response.completed', 'response.incomplete', 'response.failed'].includes(event.type)) {
      final = event.response;
    }
  }
  if (!final) fail('no final response event');
  const helper = await client.responses.stream(respParams).finalResponse();
  const summary = responseSummary(helper);
  if (summary.text !== text) fail(`helper text ${JSON.stringify(summary.text)} differs`);
  if (summary.id !== final.id) fail('helper id differs');
  return { ...summary, sequence };
}

try {
  let result;
  if (kind === 'chat-stream') result = await chatStream();
  else if (kind === 'responses-stream') result = await responsesStream();
  else if (kind === 'chat-json') {
    const c = await client.chat.completions.create(chatParams);
    if (c.object !== 'chat.completion') fail(`object ${c.object}`);
    const m = c.choices[0].message;
    result = {
      text: m.content ?? '',
      reasoning: m.reasoning_content ?? '',
      finishReason: c.choices[0].finish_reason,
      usage: c.usage,
      toolCalls: (m.tool_calls ?? []).map((t) => ({
        id: t.id,
        name: t.function.name,
        arguments: t.function.arguments,
      })),
    };
  } else if (kind === 'responses-json') {
    result = responseSummary(await client.responses.create(respParams));
  } else fail(`unknown kind ${kind}`);
  clearTimeout(timer);
  emit({ ok: true, ...result }, 0);
} catch (e) {
  clearTimeout(timer);
  emit({ ok: false, error: String(e?.message ?? e) }, 1);
}
