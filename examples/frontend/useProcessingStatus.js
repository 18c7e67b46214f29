// React hook: what to show while the user's photos are processed.
//
//   const { message, progress, etaS, failures, declareUpload } = useProcessingStatus({
//     baseUrl: STATUS_URL, getToken: () => auth.currentToken(),
//   });
//   await declareUpload(files.length); // before uploading to B2
//   {message && <ProgressBar label={message} value={progress} />}
import { useCallback, useEffect, useMemo, useRef, useState } from "react";

import { createStatusPoller, MESSAGES } from "./statusPoller.js";

export { MESSAGES };

export function useProcessingStatus({ baseUrl, getToken, intervalMs, maxIntervalMs }) {
  const [status, setStatus] = useState(null);
  const [error, setError] = useState(null);
  const tokenRef = useRef(getToken);
  tokenRef.current = getToken;

  const poller = useMemo(
    () =>
      createStatusPoller({
        baseUrl,
        getToken: () => tokenRef.current(),
        onStatus: (body) => {
          setStatus(body);
          setError(null);
        },
        onError: setError,
        intervalMs,
        maxIntervalMs,
      }),
    [baseUrl, intervalMs, maxIntervalMs],
  );

  // One poll on mount shows a run still going (e.g. after a reload); it stops once idle.
  useEffect(() => {
    poller.start();
    return () => poller.stop();
  }, [poller]);

  const declareUpload = useCallback((count) => poller.declareUpload(count), [poller]);
  const phase = status?.phase ?? "idle";
  return {
    phase,
    message: MESSAGES[phase],
    progress: status?.run.progress ?? 0,
    etaS: status?.run.eta_s ?? null,
    run: status?.run ?? null,
    failures: status?.failures ?? [],
    error,
    declareUpload,
    refresh: () => poller.start(),
  };
}
