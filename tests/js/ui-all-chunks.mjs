#!/usr/bin/env node
// Writes, with the `ai` package's own writer (createUIMessageStream +
// createUIMessageStreamResponse), a UIMessage stream holding every chunk type of
// uiMessageChunkSchema (ai 7.x) with their optional fields, and prints the
// text/event-stream body it makes. tests/ui_chunks.rs serves it as a backend,
// reads it back through agentgate, and has check-ui-stream.mjs assemble both.
//
//   node ui-all-chunks.mjs > body.sse
import { loadAi } from './lib.mjs';

const CHUNKS = [
  { type: 'start', messageId: 'msg_sdk_1', messageMetadata: { model: 'sdk-7' } },
  { type: 'start-step' },
  { type: 'reasoning-start', id: 'r1', providerMetadata: { p: { signature: 's1' } } },
  { type: 'reasoning-delta', id: 'r1', delta: 'Thinking about sources.' },
  { type: 'reasoning-end', id: 'r1' },
  { type: 'reasoning-file', url: 'data:text/plain;base64,bm90ZXM=', mediaType: 'text/plain' },
  {
    type: 'tool-input-start', toolCallId: 'c-search', toolName: 'search', title: 'Search',
    toolMetadata: { v: 1 }, inputEncoding: 'json', providerMetadata: { p: { a: 1 } },
  },
  { type: 'tool-input-delta', toolCallId: 'c-search', inputTextDelta: '{"q":"gate' },
  { type: 'tool-input-delta', toolCallId: 'c-search', inputTextDelta: 'way"}' },
  {
    type: 'tool-input-available', toolCallId: 'c-search', toolName: 'search',
    input: { q: 'gateway' }, title: 'Search', toolMetadata: { v: 1 },
  },
  { type: 'tool-output-available', toolCallId: 'c-search', output: { hits: 1 }, preliminary: true },
  {
    type: 'tool-output-available', toolCallId: 'c-search', output: { hits: 2 },
    providerMetadata: { p: { ms: 5 } }, toolMetadata: { v: 2 },
  },
  { type: 'source-url', sourceId: 's1', url: 'https://example.com/1', title: 'One', providerMetadata: { p: { r: 1 } } },
  { type: 'source-document', sourceId: 's2', mediaType: 'text/markdown', title: 'Two', filename: 'two.md' },
  { type: 'data-weather', id: 'w1', data: { city: 'Oslo', status: 'loading' } },
  { type: 'data-weather', id: 'w1', data: { city: 'Oslo', status: 'done', celsius: -3 } },
  { type: 'data-progress', data: { percent: 40 }, transient: true },
  { type: 'data-note', data: ['kept', 1, null] },
  {
    type: 'tool-input-available', toolCallId: 'c-rm', toolName: 'rm', input: { path: '/x' },
    dynamic: true, providerMetadata: { p: { b: 2 } },
  },
  {
    type: 'tool-approval-request', approvalId: 'a1', toolCallId: 'c-rm', reason: 'destructive',
    approvalDescriptor: { risk: 'high' }, isAutomatic: false, signature: 'sig',
  },
  { type: 'tool-approval-response', approvalId: 'a1', approved: false, reason: 'no' },
  { type: 'tool-output-denied', toolCallId: 'c-rm' },
  {
    type: 'tool-input-available', toolCallId: 'c-mail', toolName: 'mail', input: { to: 'a@b.c' },
    providerExecuted: true,
  },
  { type: 'tool-approval-request', approvalId: 'a2', toolCallId: 'c-mail' },
  { type: 'tool-approval-response', approvalId: 'a2', approved: true, providerExecuted: true },
  { type: 'tool-output-error', toolCallId: 'c-mail', errorText: 'mail server down', dynamic: false },
  {
    type: 'tool-input-error', toolCallId: 'c-bad', toolName: 'lookup', input: { id: 'x' },
    errorText: 'id must be a number', toolMetadata: { v: 3 },
  },
  { type: 'custom', kind: 'sdk.note', providerMetadata: { p: { n: 1 } } },
  { type: 'file', url: 'https://example.com/a.png', mediaType: 'image/png', providerMetadata: { p: { f: 1 } } },
  { type: 'text-start', id: 't1', providerMetadata: { p: { lang: 'en' } } },
  { type: 'text-delta', id: 't1', delta: 'Found "two" sources:\n' },
  {
    type: 'text-end', id: 't1',
    citations: [{ source: { type: 'source', sourceType: 'url', id: 's1', url: 'https://example.com/1' }, startIndex: 0, endIndex: 5 }],
  },
  { type: 'message-metadata', messageMetadata: { step: 1 } },
  { type: 'finish-step' },
  { type: 'start-step' },
  { type: 'text-start', id: 't2' },
  { type: 'text-delta', id: 't2', delta: 'RESET text' },
  { type: 'reasoning-start', id: 'r2' },
  { type: 'reasoning-delta', id: 'r2', delta: 'RESET reasoning' },
  { type: 'tool-input-available', toolCallId: 'c-reset', toolName: 'search', input: { q: 'RESET' } },
  { type: 'reset-step' },
  { type: 'text-start', id: 't3' },
  { type: 'text-delta', id: 't3', delta: 'one and two.' },
  { type: 'text-end', id: 't3' },
  { type: 'steering-message', id: 'st1', parts: [{ type: 'text', text: 'Shorter, please.' }] },
  { type: 'finish-step' },
  { type: 'finish', finishReason: 'stop', messageMetadata: { model: 'sdk-7', usage: { credits: 1 } } },
];

const ai = await loadAi();
const stream = ai.createUIMessageStream({
  execute({ writer }) {
    for (const chunk of CHUNKS) writer.write(chunk);
  },
});
const response = ai.createUIMessageStreamResponse({ stream });
process.stdout.write(await response.text());
