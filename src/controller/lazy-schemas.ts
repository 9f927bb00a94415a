/**
 * Fastify's own schema compilers (ajv for requests, fast-json-stringify for answers), each
 * route's compiled on its first use instead of when the server becomes ready.
 *
 * Compiling every route of the API at start costs about 0.3 s of the controller's one thread,
 * on the path from `drover up` to the app applied. Lazily, a route's first request pays for its
 * own (a few milliseconds), and {@link LazySchemas.warm} compiles the rest one at a time
 * between other work (the controller calls it a few seconds after Fastify is ready), so a
 * schema that does not compile still shows up at start (logged), not at a user's first call. What each compiled function does is unchanged: Fastify's compilers with
 * the same options, called with the same route.
 */
import AjvCompiler from '@fastify/ajv-compiler';
import { SerializerSelector, type SerializerFactory } from '@fastify/fast-json-stringify-compiler';

type ValidatorFactory = AjvCompiler.BuildCompilerFromPool;

export interface LazySchemas {
  /** For Fastify's `schemaController.compilersFactory`. */
  readonly compilersFactory: { buildValidator: ValidatorFactory; buildSerializer: SerializerFactory };
  /** Compiles what is not yet, a few at a time between other work; `onError` gets a schema that fails. */
  warm(onError: (err: unknown) => void): void;
  /**
   * Compiles now the schemas of the routes `wanted` picks (by method and URL pattern, e.g.
   * `PUT /v1/apps/:name`): those a client is about to call, compiled while the controller waits
   * for something else (its store) rather than on the client's first request.
   */
  warmNow(wanted: (method: string, url: string) => boolean, onError: (err: unknown) => void): void;
  /** Routes not compiled yet (for tests). */
  readonly pending: number;
}

/** The method and URL of the route a schema belongs to, from what Fastify gives its compilers. */
function routeOf(route: unknown): { method: string; url: string } {
  const r = typeof route === 'object' && route !== null ? (route as { method?: unknown; url?: unknown }) : {};
  return { method: typeof r.method === 'string' ? r.method : '', url: typeof r.url === 'string' ? r.url : '' };
}

export function lazySchemas(): LazySchemas {
  /** Each schema not compiled yet, with its route's method and URL. */
  const pending = new Map<() => void, { method: string; url: string }>();
  /** `make` called once, on first use or by warm; what it made is called with the same arguments. */
  const lazy = <F extends (data: unknown) => unknown>(route: unknown, make: () => F, copyErrors: boolean): F => {
    let fn: F | undefined;
    const compile = (): F => {
      pending.delete(compile);
      fn ??= make();
      return fn;
    };
    pending.set(compile, routeOf(route));
    const wrapper = (data: unknown): unknown => {
      const f = fn ?? compile();
      const r = f(data);
      // Fastify reads an ajv validator's errors from the function it holds.
      if (copyErrors) (wrapper as unknown as { errors: unknown }).errors = (f as unknown as { errors: unknown }).errors;
      return r;
    };
    return wrapper as F;
  };
  const buildValidator: ValidatorFactory = (externalSchemas, options) => {
    const compiler = AjvCompiler()(externalSchemas, options);
    return (route) => lazy(route, () => compiler(route), true);
  };
  const buildSerializer: SerializerFactory = (externalSchemas?: unknown, options?: Parameters<SerializerFactory>[1]) => {
    const compiler = SerializerSelector()(externalSchemas, options);
    return (route) => lazy(route, () => compiler(route), false);
  };
  return {
    compilersFactory: { buildValidator, buildSerializer },
    get pending() {
      return pending.size;
    },
    warmNow(wanted, onError) {
      for (const [compile, route] of [...pending]) {
        if (!wanted(route.method, route.url)) continue;
        try {
          compile();
        } catch (err) {
          onError(err);
        }
      }
    },
    warm(onError) {
      const step = () => {
        const next = pending.keys().next();
        if (next.done) return;
        try {
          next.value();
        } catch (err) {
          onError(err);
        }
        setImmediate(step).unref();
      };
      setImmediate(step).unref();
    },
  };
}
