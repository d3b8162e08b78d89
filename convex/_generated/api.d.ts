/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `npx convex dev`.
 * @module
 */

import type {
  ApiFromModules,
  FilterApi,
  FunctionReference,
} from "convex/server";
import type * as credentials from "../credentials.js";
import type * as crons from "../crons.js";
import type * as dispatch from "../dispatch.js";
import type * as docs from "../docs.js";
import type * as http from "../http.js";
import type * as jobs from "../jobs.js";
import type * as lib_aggregates from "../lib/aggregates.js";
import type * as lib_auth from "../lib/auth.js";
import type * as lib_dispatcher from "../lib/dispatcher.js";
import type * as lib_errors from "../lib/errors.js";
import type * as lib_exposition from "../lib/exposition.js";
import type * as lib_functions from "../lib/functions.js";
import type * as lib_model from "../lib/model.js";
import type * as lib_policy from "../lib/policy.js";
import type * as lib_sha256 from "../lib/sha256.js";
import type * as lib_slots from "../lib/slots.js";
import type * as lib_staging from "../lib/staging.js";
import type * as lib_validation from "../lib/validation.js";
import type * as lib_validators from "../lib/validators.js";
import type * as metrics from "../metrics.js";
import type * as operator from "../operator.js";

/**
 * A utility for referencing Convex functions in your app's API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
declare const fullApi: ApiFromModules<{
  credentials: typeof credentials;
  crons: typeof crons;
  dispatch: typeof dispatch;
  docs: typeof docs;
  http: typeof http;
  jobs: typeof jobs;
  "lib/aggregates": typeof lib_aggregates;
  "lib/auth": typeof lib_auth;
  "lib/dispatcher": typeof lib_dispatcher;
  "lib/errors": typeof lib_errors;
  "lib/exposition": typeof lib_exposition;
  "lib/functions": typeof lib_functions;
  "lib/model": typeof lib_model;
  "lib/policy": typeof lib_policy;
  "lib/sha256": typeof lib_sha256;
  "lib/slots": typeof lib_slots;
  "lib/staging": typeof lib_staging;
  "lib/validation": typeof lib_validation;
  "lib/validators": typeof lib_validators;
  metrics: typeof metrics;
  operator: typeof operator;
}>;
export declare const api: FilterApi<
  typeof fullApi,
  FunctionReference<any, "public">
>;
export declare const internal: FilterApi<
  typeof fullApi,
  FunctionReference<any, "internal">
>;
