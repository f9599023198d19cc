#!/usr/bin/env node
// Validates a whole AG-UI event stream (a text/event-stream body) with the real
// `@ag-ui/client`, on the path its HttpAgent takes: the body is served by a `fetch`
// handed to `new HttpAgent({ fetch })`, and `runAgent()` reads it with the client's
// SSE parser (`transformHttpEventStream` / `parseSSEStream`), validates every event
// against `@ag-ui/core`'s schemas (`enforceEvents`), expands chunk events
// (`transformChunks`), checks the event order rules (`verifyEvents`: RUN_STARTED
// first, starts before contents, everything closed before RUN_FINISHED, nothing after
// the end) and applies the events to the agent's messages and state.
//
//   node check-ag-ui-stream.mjs [body.sse] [--thread-id ID]   (reads stdin without a path)
//   node check-ag-ui-stream.mjs --url URL --key KEY --message TEXT [--thread-id ID]
//
// With --url the HttpAgent calls the gateway itself (a real POST of its RunAgentInput, with
// `authorization: Bearer KEY` and one user message) instead of reading a body it is handed.
//
// Prints ONE JSON line:
//   {"ok":true,"types":[...],"threadId","runId","messages":[...],"state":{...},
//    "texts":[...],"toolCalls":[...],"runError":{message,code}|null}
//   {"ok":false,"error":"...",...}   (exit 1)
// ok = runAgent() settled without throwing, the client logged no warning or error
// (an unrecognised event dropped or a field stripped is a warning), the stream's last
// event is RUN_FINISHED or RUN_ERROR (a stream that just stops is not a proper end),
// RUN_FINISHED echoes RUN_STARTED's threadId and runId, and, with --thread-id, that
// threadId is the one given.
import { readFileSync } from 'node:fs';
import { HttpAgent } from '@ag-ui/client';

function emit(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exitCode = result.ok ? 0 : 1;
}

function errorMessage(error) {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

function parseArgs(argv) {
  const args = { path: null, threadId: null, url: null, key: null, message: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--thread-id') args.threadId = argv[++i];
    else if (argv[i] === '--url') args.url = argv[++i];
    else if (argv[i] === '--key') args.key = argv[++i];
    else if (argv[i] === '--message') args.message = argv[++i];
    else args.path = argv[i];
  }
  return args;
}

async function readInput(path) {
  if (path && path !== '-') return readFileSync(path);
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return Buffer.concat(parts);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const bytes = args.url ? null : await readInput(args.path);

  // Whatever the client logs is a finding: it warns where it drops or strips material.
  const logged = [];
  for (const level of ['warn', 'error']) {
    console[level] = (...parts) => logged.push(`console.${level}: ${parts.map(String).join(' ')}`);
  }

  const agent = args.url
    ? new HttpAgent({
        url: args.url,
        threadId: args.threadId ?? undefined,
        headers: args.key ? { authorization: `Bearer ${args.key}` } : {},
        initialMessages: [{ id: 'user-1', role: 'user', content: args.message ?? 'hello' }],
      })
    : new HttpAgent({
        url: 'http://agentgate.test/run',
        threadId: args.threadId ?? undefined,
        fetch: async () =>
          new Response(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
            status: 200,
            headers: { 'content-type': 'text/event-stream' },
          }),
      });
  const events = [];
  let runError = null;
  agent.subscribe({
    onEvent: ({ event }) => {
      events.push(event);
    },
    onRunErrorEvent: ({ event }) => {
      runError = { message: event.message, code: event.code ?? null };
    },
  });

  const base = () => ({
    types: events.map((e) => e.type),
    messages: agent.messages,
    state: agent.state,
    runError,
    logged,
  });
  try {
    await agent.runAgent({ runId: 'check-run' });
  } catch (error) {
    emit({ ok: false, error: `runAgent threw: ${errorMessage(error)}`, ...base() });
    return;
  }
  const fail = (error) => emit({ ok: false, error, ...base() });
  if (logged.length > 0) return fail(`the client logged: ${logged[0]}`);
  if (events.length === 0) return fail('no events');
  const first = events[0];
  const last = events[events.length - 1];
  if (first.type !== 'RUN_STARTED') return fail(`first event is ${first.type}`);
  if (last.type !== 'RUN_FINISHED' && last.type !== 'RUN_ERROR') {
    return fail(`the stream ends with ${last.type}, not RUN_FINISHED or RUN_ERROR`);
  }
  const ends = events.filter((e) => e.type === 'RUN_FINISHED' || e.type === 'RUN_ERROR');
  if (ends.length !== 1) return fail(`${ends.length} RUN_FINISHED/RUN_ERROR events`);
  if (last.type === 'RUN_FINISHED' && (last.threadId !== first.threadId || last.runId !== first.runId)) {
    return fail(
      `RUN_FINISHED {threadId: ${last.threadId}, runId: ${last.runId}} does not echo RUN_STARTED ` +
        `{threadId: ${first.threadId}, runId: ${first.runId}}`,
    );
  }
  if (args.threadId !== null && first.threadId !== args.threadId) {
    return fail(`threadId ${first.threadId}, expected ${args.threadId}`);
  }
  const assistant = agent.messages.filter((m) => m.role === 'assistant');
  emit({
    ok: true,
    threadId: first.threadId,
    runId: first.runId,
    texts: assistant.map((m) => m.content).filter((c) => typeof c === 'string' && c.length > 0),
    toolCalls: assistant.flatMap((m) => m.toolCalls ?? []).map((c) => ({
      id: c.id,
      name: c.function.name,
      arguments: c.function.arguments,
    })),
    toolResults: agent.messages.filter((m) => m.role === 'tool').map((m) => ({
      toolCallId: m.toolCallId,
      content: m.content,
    })),
    ...base(),
  });
}

main().catch((error) => emit({ ok: false, error: errorMessage(error) }));
