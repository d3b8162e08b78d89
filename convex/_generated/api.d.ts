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
import type * as docs from "../docs.js";
import type * as jobs from "../jobs.js";
import type * as lib_auth from "../lib/auth.js";
import type * as lib_errors from "../lib/errors.js";
import type * as lib_model from "../lib/model.js";
import type * as lib_policy from "../lib/policy.js";
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
  docs: typeof docs;
  jobs: typeof jobs;
  "lib/auth": typeof lib_auth;
  "lib/errors": typeof lib_errors;
  "lib/model": typeof lib_model;
  "lib/policy": typeof lib_policy;
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
