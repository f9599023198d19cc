#!/usr/bin/env node
// The official `openai` Node client (pinned in package-lock.json), unchanged, against
// agentgate's `openai` front: both endpoints, streaming and not, a second turn on each, the
// models, and the errors. Every answer goes through the SDK's own parsing and, for streams,
// its accumulating helpers (`chat.completions.stream()` → `finalChatCompletion()`,
// `responses.stream()` → `finalResponse()`), which throw on an inconsistent stream.
//
//   node openai-front.mjs --base-url http://127.0.0.1:PORT/openai/v1 --key KEY --model ID
//       [--message TEXT]
//
// Prints ONE JSON line: {"ok":true, "models", "chat", "chatStream", "chatHelper", "chatSecond",
// "responses", "responsesStream", "responsesSecond", "errors", "credits"} — `credits` the sum
// of `usage.credits` of every answer — or {"ok":false,"error"} (exit 1).
import OpenAI from 'openai';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const baseURL = arg('base-url');
const apiKey = arg('key');
const model = arg('model');
const message = arg('message', 'What is the weather in Paris?');

function emit(obj, code) {
  process.stdout.write(JSON.stringify(obj) + '\n');
  process.exit(code);
}

const timer = setTimeout(() => emit({ ok: false, error: 'timed out after 60 s' }, 1), 60000);
const client = new OpenAI({ apiKey, baseURL, maxRetries: 0, timeout: 20000 });

function fail(msg) {
  throw new Error(msg);
}

let credits = 0;
function charged(usage, where) {
  if (!usage || typeof usage.credits !== 'number') fail(`${where}: no usage.credits`);
  credits += usage.credits;
  return usage;
}

function toolCallsOf(message) {
  return (message.tool_calls ?? []).map((c) => ({
    id: c.id,
    name: c.function.name,
    arguments: c.function.arguments,
  }));
}

async function models() {
  const ids = [];
  for await (const m of client.models.list()) {
    if (m.object !== 'model' || typeof m.created !== 'number' || !m.owned_by) fail('model shape');
    ids.push(m.id);
  }
  const one = await client.models.retrieve(model);
  if (one.id !== model) fail(`retrieve gave ${one.id}`);
  return ids;
}

async function chat() {
  const { data, response } = await client.chat.completions
    .create({ model, messages: [{ role: 'user', content: message }] })
    .withResponse();
  if (data.object !== 'chat.completion') fail(`object ${data.object}`);
  const choice = data.choices[0];
  return {
    id: data.id,
    model: data.model,
    text: choice.message.content ?? '',
    toolCalls: toolCallsOf(choice.message),
    finishReason: choice.finish_reason,
    usage: charged(data.usage, 'chat'),
    conversation: response.headers.get('x-conversation-id'),
  };
}

async function chatStream() {
  const { data: stream, response } = await client.chat.completions
    .create({
      model,
      messages: [{ role: 'user', content: message }],
      stream: true,
      stream_options: { include_usage: true },
    })
    .withResponse();
  const ids = new Set();
  let text = '';
  let finishReason = null;
  let usage = null;
  let first = true;
  let usageChunkChoices = null;
  const tools = new Map();
  for await (const chunk of stream) {
    ids.add(chunk.id);
    if (chunk.object !== 'chat.completion.chunk') fail(`object ${chunk.object}`);
    if (chunk.usage) {
      usage = chunk.usage;
      usageChunkChoices = chunk.choices.length;
    }
    for (const choice of chunk.choices) {
      if (first && choice.delta.role !== 'assistant') fail('no role in the first delta');
      first = false;
      text += choice.delta.content ?? '';
      for (const t of choice.delta.tool_calls ?? []) {
        const prev = tools.get(t.index) ?? { id: t.id, name: t.function?.name, arguments: '' };
        prev.arguments += t.function?.arguments ?? '';
        tools.set(t.index, prev);
      }
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  if (ids.size !== 1) fail(`${ids.size} ids across the chunks`);
  if (usageChunkChoices !== 0) fail('the usage chunk must have choices: []');
  return {
    text,
    toolCalls: [...tools.values()],
    finishReason,
    usage: charged(usage, 'chat stream'),
    conversation: response.headers.get('x-conversation-id'),
  };
}

// The SDK's accumulating helper: throws on chunks it cannot assemble.
async function chatHelper() {
  const stream = client.chat.completions.stream({
    model,
    messages: [{ role: 'user', content: message }],
    stream_options: { include_usage: true },
  });
  const final = await stream.finalChatCompletion();
  return {
    text: final.choices[0].message.content ?? '',
    toolCalls: toolCallsOf(final.choices[0].message),
    finishReason: final.choices[0].finish_reason,
    usage: charged(final.usage, 'chat helper'),
  };
}

async function chatSecond(conversation) {
  const data = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'and again' }],
    metadata: { conversation_id: conversation },
  });
  charged(data.usage, 'chat second');
  return { text: data.choices[0].message.content ?? '' };
}

function outputOf(response) {
  const calls = response.output
    .filter((i) => i.type === 'function_call')
    .map((i) => ({ id: i.call_id, name: i.name, arguments: i.arguments }));
  return { text: response.output_text, functionCalls: calls };
}

async function responses() {
  const { data, response } = await client.responses
    .create({ model, input: message })
    .withResponse();
  if (data.object !== 'response') fail(`object ${data.object}`);
  return {
    id: data.id,
    status: data.status,
    ...outputOf(data),
    usage: charged(data.usage, 'responses'),
    conversation: response.headers.get('x-conversation-id'),
  };
}

async function responsesStream() {
  const stream = client.responses.stream({
    model,
    input: [{ role: 'user', content: [{ type: 'input_text', text: message }] }],
  });
  const types = [];
  let next = 0;
  let deltas = '';
  for await (const event of stream) {
    if (event.sequence_number !== next) fail(`sequence_number ${event.sequence_number} ≠ ${next}`);
    next += 1;
    types.push(event.type);
    if (event.type === 'response.output_text.delta') deltas += event.delta;
  }
  const final = await stream.finalResponse();
  if (types[0] !== 'response.created' || types.at(-1) !== 'response.completed') {
    fail(`events ${types[0]} … ${types.at(-1)}`);
  }
  return {
    id: final.id,
    status: final.status,
    ...outputOf(final),
    deltas,
    types: [...new Set(types)],
    usage: charged(final.usage, 'responses stream'),
  };
}

async function responsesSecond(previous) {
  const data = await client.responses.create({
    model,
    input: 'and again',
    previous_response_id: previous,
  });
  charged(data.usage, 'responses second');
  return { text: data.output_text };
}

async function refused(call) {
  try {
    await call();
  } catch (e) {
    if (!(e instanceof OpenAI.APIError)) throw e;
    return { status: e.status, type: e.type, code: e.code, param: e.param, message: e.message };
  }
  fail('an error was expected');
}

async function errors() {
  const bad = new OpenAI({ apiKey: 'agk_nope', baseURL, maxRetries: 0, timeout: 20000 });
  return {
    unknownModel: await refused(() =>
      client.chat.completions.create({ model: 'no-such-agent', messages: [{ role: 'user', content: 'x' }] }),
    ),
    noUserMessage: await refused(() =>
      client.chat.completions.create({ model, messages: [{ role: 'system', content: 'x' }] }),
    ),
    badKey: await refused(() => bad.responses.create({ model, input: 'x' })),
    badPrevious: await refused(() =>
      client.responses.create({ model, input: 'x', previous_response_id: 'resp_nope' }),
    ),
  };
}

try {
  const out = { ok: true, models: await models() };
  out.chat = await chat();
  out.chatStream = await chatStream();
  out.chatHelper = await chatHelper();
  out.chatSecond = await chatSecond(out.chat.conversation);
  out.responses = await responses();
  out.responsesStream = await responsesStream();
  out.responsesSecond = await responsesSecond(out.responses.id);
  out.errors = await errors();
  out.credits = credits;
  clearTimeout(timer);
  emit(out, 0);
} catch (e) {
  emit({ ok: false, error: String(e?.stack ?? e) }, 1);
}
