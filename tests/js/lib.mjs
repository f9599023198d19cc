// Shared helpers for check-ui-stream.mjs and use-chat.mjs.
//
// Warning capture is installed as soon as this module is evaluated; the `ai`
// package is imported dynamically afterwards (see loadAi) so that anything it
// emits, even at import time, is caught.

const warnings = [];

// The AI SDK's own logger hook: a function receives every warning.
globalThis.AI_SDK_LOG_WARNINGS = (options) => {
  for (const w of options?.warnings ?? []) warnings.push({ source: 'AI_SDK_LOG_WARNINGS', warning: w });
};
// Fallbacks: the default logger uses process.emitWarning, or console.warn where
// that is missing.
const originalEmitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  warnings.push({ source: 'process.emitWarning', warning: String(warning?.message ?? warning) });
  return originalEmitWarning(warning, ...rest);
};
const originalConsoleWarn = console.warn.bind(console);
console.warn = (...args) => {
  warnings.push({ source: 'console.warn', warning: args.map(String).join(' ') });
  originalConsoleWarn(...args);
};

export function capturedWarnings() {
  return warnings;
}

export async function loadAi() {
  return import('ai');
}

export function errorMessage(error) {
  if (error == null) return String(error);
  if (error instanceof Error) {
    const name = error.name && error.name !== 'Error' ? `${error.name}: ` : '';
    const cause = error.cause instanceof Error ? ` (cause: ${error.cause.message})` : '';
    return `${name}${error.message}${cause}`;
  }
  try {
    return JSON.stringify(error);
  } catch {
    return String(error);
  }
}

/**
 * Short description of why a value failed uiMessageChunkSchema. The SDK's own
 * TypeValidationError message embeds the whole zod union report (several KB);
 * this picks the union branch whose `type` matched, or reports an unknown type.
 */
export function summarizeSchemaError(error, value) {
  const issues = error?.cause?.issues;
  if (!Array.isArray(issues)) return errorMessage(error);
  const fmt = (list) =>
    list.map((i) => `${i.path?.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; ');
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'chunk is not a JSON object';
  const union = issues.find((i) => i.code === 'invalid_union' && Array.isArray(i.errors));
  if (!union) return fmt(issues);
  const typeMatched = union.errors.filter(
    (branch) => !branch.some((i) => i.path?.length === 1 && i.path[0] === 'type'),
  );
  if (typeMatched.length > 0) return `${JSON.stringify(value?.type)} chunk: ${fmt(typeMatched[0])}`;
  return `unknown chunk type ${JSON.stringify(value.type)}`;
}

/**
 * Runs the SDK's readUIMessageStream over a stream of already validated
 * UIMessageChunks, the way useChat assembles the assistant message.
 *
 * An `error` chunk makes the SDK call onError with a plain Error carrying the
 * chunk's errorText; that is a legitimate part of the protocol and is reported
 * as streamErrors. Any other onError call (e.g. UIMessageStreamError for a
 * delta without its start, or a tool output for an unknown toolCallId) or a
 * throw is a processing failure.
 *
 * `chunkStream` must be a ReadableStream<UIMessageChunk>. `seen` receives every
 * chunk that the SDK pulled from it (in order).
 */
export async function assembleMessage(ai, chunkStream, seen = []) {
  const pendingErrorTexts = [];
  const tapped = chunkStream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        seen.push(chunk);
        if (chunk?.type === 'error') pendingErrorTexts.push(chunk.errorText);
        controller.enqueue(chunk);
      },
    }),
  );

  const streamErrors = [];
  const processingErrors = [];
  const onError = (error) => {
    const i =
      error instanceof Error && error.constructor === Error
        ? pendingErrorTexts.indexOf(error.message)
        : -1;
    if (i >= 0) {
      pendingErrorTexts.splice(i, 1);
      streamErrors.push(error.message);
    } else if (ai.TypeValidationError.isInstance(error) && error.value !== undefined) {
      // DefaultChatTransport rejects a chunk that fails uiMessageChunkSchema.
      processingErrors.push(
        `${error.name}: chunk ${JSON.stringify(error.value)} failed uiMessageChunkSchema: ` +
          summarizeSchemaError(error, error.value),
      );
    } else {
      processingErrors.push(errorMessage(error));
    }
  };

  let message = null;
  try {
    for await (const snapshot of ai.readUIMessageStream({ stream: tapped, onError })) {
      message = snapshot;
    }
  } catch (error) {
    processingErrors.push(errorMessage(error));
  }
  return { message, streamErrors, processingErrors };
}

/** Writes exactly one JSON line to stdout and sets the exit code. */
let emitted = false;
export function emit(result) {
  if (emitted) return;
  emitted = true;
  const warns = capturedWarnings();
  if (warns.length > 0) {
    result.warnings = warns;
    if (result.ok) {
      result.ok = false;
      result.error = `AI SDK emitted ${warns.length} warning(s): ${JSON.stringify(warns[0].warning)}`;
    }
  }
  process.exitCode = result.ok ? 0 : 1;
  process.stdout.write(JSON.stringify(result) + '\n');
}

export function installCrashHandlers() {
  const crash = (error) => {
    emit({ ok: false, error: `uncaught: ${errorMessage(error)}` });
    process.exitCode = 1;
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
}
