#!/usr/bin/env node
// Validates a whole AI SDK UIMessage stream (a text/event-stream body) with the
// real `ai` package, the way its client (DefaultChatTransport + useChat) reads it.
//
//   node check-ui-stream.mjs [body.sse]      (reads stdin when no path is given)
//
// Prints ONE JSON line:
//   {"ok":true,"done":bool,"chunks":[...],"message":{...}[,"errorChunks":[...],"streamError":"..."]}
//   {"ok":false,"error":"...","done":bool,"chunks":[...][,"failures":[...]]}   (exit 1)
// ok = every SSE data event (other than [DONE]) passed uiMessageChunkSchema, the
// SDK assembled the message without throwing or calling onError (other than for
// `error` chunks), and the SDK emitted no warning.
import { readFileSync } from 'node:fs';
import {
  assembleMessage,
  emit,
  errorMessage,
  installCrashHandlers,
  loadAi,
  summarizeSchemaError,
} from './lib.mjs';

installCrashHandlers();

async function readInput() {
  const path = process.argv[2];
  if (path && path !== '-') return readFileSync(path);
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return Buffer.concat(parts);
}

function byteStream(bytes) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      controller.close();
    },
  });
}

function arrayStream(items) {
  return new ReadableStream({
    start(controller) {
      for (const item of items) controller.enqueue(item);
      controller.close();
    },
  });
}

async function main() {
  const ai = await loadAi();
  const bytes = await readInput();
  // The SDK silently drops `data: [DONE]`; report whether the terminator was there.
  const done = /(?:^|[\r\n])data: ?\[DONE\](?:\r\n|[\r\n]|$)/.test(bytes.toString('utf8'));

  // Step 1: the SDK's own SSE + JSON + schema parsing, as DefaultChatTransport does it.
  const chunks = [];
  const failures = [];
  let index = 0;
  try {
    const results = ai.parseJsonEventStream({ stream: byteStream(bytes), schema: ai.uiMessageChunkSchema });
    for await (const result of results) {
      if (result.success) {
        chunks.push(result.value);
      } else if (result.rawValue !== undefined) {
        failures.push({
          index,
          error: `${result.error?.name ?? 'Error'}: ${summarizeSchemaError(result.error, result.rawValue)}`,
          raw: result.rawValue,
        });
      } else {
        // Not JSON at all (JSONParseError carries the event's data text).
        failures.push({ index, error: errorMessage(result.error), raw: result.error?.text ?? null });
      }
      index++;
    }
  } catch (error) {
    emit({ ok: false, error: `SSE parsing threw: ${errorMessage(error)}`, done, chunks });
    return;
  }
  if (failures.length > 0) {
    const f = failures[0];
    emit({
      ok: false,
      error: `data event #${f.index} ${JSON.stringify(f.raw)} failed uiMessageChunkSchema: ${f.error}`,
      done,
      chunks,
      failures,
    });
    return;
  }

  // Step 2: assemble the UIMessage exactly as useChat does.
  const { message, streamErrors, processingErrors } = await assembleMessage(ai, arrayStream(chunks));
  const errorChunks = chunks.filter((c) => c.type === 'error');
  const out = processingErrors.length > 0
    ? { ok: false, error: `readUIMessageStream: ${processingErrors.join('; ')}`, done, chunks, message }
    : { ok: true, done, chunks, message };
  if (errorChunks.length > 0) {
    out.errorChunks = errorChunks;
    out.streamError = streamErrors.join('; ');
  }
  emit(out);
}

main().catch((error) => emit({ ok: false, error: errorMessage(error) }));
