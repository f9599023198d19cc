#!/usr/bin/env node
// Drives the AI SDK's DefaultChatTransport the way a React `useChat` app does,
// without React: POST {id, messages, trigger, messageId} to the API, parse the
// response with the SDK's UIMessage-stream client, assemble the assistant message.
//
//   node use-chat.mjs <api-url> <bearer-token> <message-text> [chat-id]
//
// Env: USE_CHAT_TIMEOUT_MS (default 30000) aborts the request.
//
// Prints ONE JSON line:
//   {"ok":true,"status":200,"headers":{...},"message":{...},"chunks":[...][,"errorChunks":[...],"streamError":"..."]}
//   {"ok":false,"error":"...",...}   (exit 1)
// ok = HTTP 2xx, every chunk passed uiMessageChunkSchema (the transport throws
// otherwise), the SDK assembled the message without error (other than `error`
// chunks, reported in errorChunks/streamError), and the SDK emitted no warning.
import { assembleMessage, emit, errorMessage, installCrashHandlers, loadAi } from './lib.mjs';

installCrashHandlers();

async function main() {
  const [api, token, text, chatIdArg] = process.argv.slice(2);
  if (!api || token === undefined || text === undefined) {
    emit({ ok: false, error: 'usage: node use-chat.mjs <api-url> <bearer-token> <message-text> [chat-id]' });
    return;
  }
  const ai = await loadAi();
  const chatId = chatIdArg || ai.generateId();
  const timeoutMs = Number(process.env.USE_CHAT_TIMEOUT_MS ?? 30000);
  const abortSignal = AbortSignal.timeout(timeoutMs);

  // Observe the HTTP response (status, headers) without altering it.
  let response;
  const observingFetch = async (input, init) => {
    response = await globalThis.fetch(input, init);
    return response;
  };
  const responseInfo = () =>
    response
      ? { status: response.status, headers: Object.fromEntries(response.headers.entries()) }
      : {};

  const transport = new ai.DefaultChatTransport({
    api,
    headers: { Authorization: `Bearer ${token}` },
    fetch: observingFetch,
  });

  let chunkStream;
  try {
    chunkStream = await transport.sendMessages({
      chatId,
      messages: [{ id: ai.generateId(), role: 'user', parts: [{ type: 'text', text }] }],
      trigger: 'submit-message',
      messageId: undefined,
      abortSignal,
    });
  } catch (error) {
    // Non-2xx responses land here (the SDK's error carries the body text).
    emit({ ok: false, error: `sendMessages: ${errorMessage(error)}`, ...responseInfo() });
    return;
  }

  const chunks = [];
  const { message, streamErrors, processingErrors } = await assembleMessage(ai, chunkStream, chunks);
  const errorChunks = chunks.filter((c) => c.type === 'error');
  const out = processingErrors.length > 0
    ? { ok: false, error: `readUIMessageStream: ${processingErrors.join('; ')}`, ...responseInfo(), message, chunks }
    : { ok: true, ...responseInfo(), message, chunks };
  if (errorChunks.length > 0) {
    out.errorChunks = errorChunks;
    out.streamError = streamErrors.join('; ');
  }
  emit(out);
}

main().catch((error) => emit({ ok: false, error: errorMessage(error) }));
