/**
 * The registry of API error codes. Every error the API returns has one of these codes, a
 * message naming the field and the reason, and the HTTP status given here. docs/api.md lists
 * the same codes; a test keeps the two in step.
 */
export const ERROR_CODES = {
  unauthorized: { status: 401, description: 'Missing or invalid bearer token.' },
  forbidden: { status: 403, description: 'A dashboard request that changes something came without its session\'s CSRF token (`X-CSRF-Token`), or from another origin; or an agent asked for the bundle of an app it is not an instance of.' },
  not_found: { status: 404, description: 'No such app, role, instance or route.' },
  invalid_request: { status: 400, description: 'The request is malformed: bad JSON, a missing or mistyped field, a bad parameter.' },
  invalid_spec: { status: 422, description: 'The app file is invalid; `details` lists each field and reason. Nothing was applied.' },
  name_mismatch: { status: 400, description: 'The app name in the path differs from `app` in the file.' },
  count_out_of_bounds: { status: 422, description: "A manual count outside the role's min/max." },
  app_deleting: { status: 409, description: 'The app is being deleted; wait until it is gone.' },
  no_policy: { status: 422, description: 'Asked to hand a role back to its scaling policies, but it has none.' },
  not_drainable: { status: 409, description: 'Only a serving instance of a role, not already leaving, can be drained by hand.' },
  payload_too_large: { status: 413, description: 'The request body, or the app file in it, is larger than its limit.' },
  unsupported_media_type: { status: 415, description: 'The body is not JSON.' },
  request_timeout: { status: 408, description: 'The request did not arrive in time (headers within 10 s, the whole request within 30 s); the connection is closed.' },
  uri_too_long: { status: 414, description: 'A path parameter is longer than 100 characters.' },
  headers_too_large: { status: 431, description: 'The request line and headers are larger than 16 KiB; the connection is closed.' },
  no_tenants: { status: 422, description: 'The role hosts no tenants (no `tenants:` in its spec).' },
  tenant_exists: { status: 409, description: 'Another tenant of the app has this name or host; `details` names the field.' },
  tenant_failed: { status: 422, description: "The tenant's `add` failed on every attempt; the tenant's status (Location) has the reason and the last output lines." },
  busy: { status: 503, description: 'The controller has as many live streams open as it serves (64), or 20,000 sign-ups already waiting; try again shortly.' },
  starting: { status: 503, description: 'The controller is still starting (opening its store) after a minute of waiting, or its start failed; try again shortly. A request that comes while it starts waits for it.' },
  not_leader: { status: 503, description: 'This controller is a standby (another one leads; the message names it) or has just stepped down: it serves reads only. Send changes to the leader (`GET /v1/controller`).' },
  volume_in_use: { status: 409, description: 'The volume belongs to a member slot an instance holds now; scale the role down (or remove it) first.' },
  bundle_refused: { status: 422, description: 'The app folder could not be packed into a bundle for joined hosts: larger than the limit (the message names its size, the limit and the largest files), a symlink pointing out of it or to an absolute path, or a file that cannot be read. Nothing was applied.' },
  internal: { status: 500, description: 'A bug: the controller could not handle the request. Logged with the request id.' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  readonly error: {
    readonly code: ErrorCode;
    readonly message: string;
    readonly details?: readonly { readonly path: string; readonly message: string }[];
  };
}

export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: readonly { path: string; message: string }[],
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = ERROR_CODES[code].status;
  }

  body(): ErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } };
  }
}
