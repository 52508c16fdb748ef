// SPDX-License-Identifier: MIT
// TypeScript declarations of herald.js, Herald's JavaScript client.

/** What a payload may be given as: bytes, or a string sent as UTF-8. */
export type Payload = Uint8Array | ArrayBuffer | ArrayBufferView | string;
/** A seq or id: a Number, or a bigint when it does not fit 2^53. */
export type Uint = number | bigint;

/** Encodes a value as MessagePack (nil, bool, int to 64 bits, float64, str, bin, array, map). */
export function encode(value: unknown): Uint8Array;
/** Decodes one MessagePack value; ints beyond 2^53 come back as bigint, bin as a Uint8Array view. */
export function decode(bytes: Uint8Array | ArrayBuffer): any;
export function encodeText(s: string): Uint8Array;
export function decodeText(b: Uint8Array): string;
export function encodeJSON(value: unknown): Uint8Array;
export function decodeJSON(b: Uint8Array): any;
/** True when `s` is a valid topic, or with `pattern` a valid pattern. */
export function validTopic(s: string, pattern?: boolean): boolean;

/** The broker's ERR codes. */
export const ERR: Readonly<{
  PROTOCOL: 1; TOO_LARGE: 2; AUTH: 3; NOT_PERMITTED: 4; INVALID_TOPIC: 5; SLOW_CONSUMER: 6;
  LIMIT: 7; UNKNOWN_SID: 8; SHUTDOWN: 9; HISTORY_GAP: 10; HEARTBEAT: 11; INVALID_OPTION: 12;
  REJECTED: 13;
}>;

export type LocalCode = 'ETIMEDOUT' | 'EDISCONNECTED' | 'ECLOSED' | 'ENOTCONN' | 'EBUFFULL' |
  'ETOOBIG' | 'ETOPIC' | 'EPROTO' | 'ECONNECT' | 'EAUTH' | 'ETLS';

/** An ERR frame (numeric code, ref: the sid or ack id it names) or a local failure (string code). */
export class HeraldError extends Error {
  code: number | LocalCode;
  ref?: Uint;
  subscription?: Subscription;
}

export interface Welcome {
  v: number;
  server: string;
  client_id: Uint;
  worker: number;
  max_payload: number;
  max_frame: number;
  heartbeat_ms: number;
  /** The incarnation of the broker's seqs and history, where the broker has it. */
  epoch?: string;
  [key: string]: unknown;
}

export interface ClientOptions {
  name?: string;
  token?: string;
  /** Called for a token before every reconnect (and the first connect without `token`). */
  tokenRefresh?: () => Promise<string> | string;
  /** Receive your own publications (default true). */
  echo?: boolean;
  /** A WebSocket constructor where there is no global one (Node < 22: the ws package). */
  WebSocket?: unknown;
  /**
   * Passed as the third argument of the WebSocket constructor, where it takes one: with Node's
   * ws package, TLS options for wss:// such as `{ ca, cert, key, servername }`.
   */
  wsOptions?: Record<string, unknown>;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  pingIntervalMs?: number;
  maxPingsOut?: number;
  reconnect?: boolean;
  maxReconnect?: number;
  reconnectWaitMs?: number;
  reconnectWaitMaxMs?: number;
  reconnectJitter?: number;
  retryOnFailedConnect?: boolean;
  reconnectBufBytes?: number;
  maxOutBytes?: number;
  /** Reply topics of requests start with this (default `_INBOX.<22 random characters>`). */
  inboxPrefix?: string;
}

export interface PublishOptions {
  reply?: string;
  headers?: Record<string, string>;
  /** Ask for an ACK (default true): the Promise resolves with the seq. */
  ack?: boolean;
}

export interface GapInfo {
  subscription: Subscription;
  topic: string;
  /** history: ERR 10 (history or epoch gone); dropped: a GAP frame; restart: the client saw the broker's seqs start again. */
  reason: 'history' | 'dropped' | 'restart';
  first?: Uint;
  last?: Uint;
  topics?: string[];
  message?: string;
  error?: HeraldError;
}

export type FilterExpr =
  | ['==' | '!=', string, unknown]
  | ['<' | '<=' | '>' | '>=', string, number]
  | ['in', string, unknown[]]
  | ['exists', string]
  | ['and' | 'or', ...FilterExpr[]]
  | ['not', FilterExpr];

/** SUB options (sent as given) and the client's own callbacks. */
export interface SubscribeOptions {
  queue?: string;
  since?: Uint;
  last?: Uint;
  epoch?: string;
  filter?: FilterExpr;
  fields?: string[];
  rate?: { n: number; ms: number };
  conflate?: { ms: number; key?: string };
  batch?: { max: number; ms: number };
  /** Member info while subscribed (exact topics only): bytes, a string (UTF-8) or a value (MessagePack). */
  presence?: Uint8Array | string | unknown;
  onGap?: (info: GapInfo) => void;
  onError?: (err: HeraldError) => void;
  /** Resume from the last seq after a reconnect (default: true except for $ and _INBOX. patterns). */
  resume?: boolean;
  [key: string]: unknown;
}

export class Message {
  readonly client: Client;
  readonly subscription: Subscription;
  readonly topic: string;
  readonly seq: Uint;
  /** The payload: a view into the received frame. */
  readonly data: Uint8Array;
  readonly reply: string | null;
  readonly headers: Record<string, string> | null;
  /** From history (since, last, a resume) rather than live. */
  readonly replay: boolean;
  text(): string;
  json(): any;
  unpack(): any;
  respond(data: Payload, opts?: Omit<PublishOptions, 'ack' | 'reply'>): Promise<void>;
}

export class Subscription {
  readonly client: Client;
  readonly pattern: string;
  readonly opts: SubscribeOptions;
  /** This connection's sid (a new one after each reconnect). */
  readonly sid: number;
  readonly delivered: number;
  readonly closed: boolean;
  /** Resolves once the broker has the subscription; rejects with the ERR that refused it. */
  readonly ready: Promise<Subscription>;
  lastSeq(topic?: string): Uint | undefined;
  unsubscribe(): void;
}

export interface Presence {
  count: Uint;
  members: Map<Uint, Uint8Array>;
  joined: [Uint, Uint8Array][];
  left: Uint[];
  snapshot: boolean;
}

export interface ClientEvents {
  connected: Welcome;
  reconnected: Welcome;
  disconnected: HeraldError;
  closed: HeraldError | undefined;
  error: HeraldError | Error;
  gap: GapInfo;
}

export class Client {
  /** Starts connecting at once; `url` defaults to the broker this module was loaded from. */
  constructor(url?: string, opts?: ClientOptions);
  constructor(opts: ClientOptions);
  readonly url: string;
  readonly state: 'connecting' | 'connected' | 'reconnecting' | 'draining' | 'closed';
  readonly welcome: Welcome | null;
  readonly epoch: string | undefined;
  readonly clientId: Uint | undefined;
  readonly stats: { msgsIn: number; msgsOut: number; reconnects: number; duplicates: number; restarts: number };
  /** Resolves after the first WELCOME. */
  readonly ready: Promise<Client>;
  on<E extends keyof ClientEvents>(event: E, fn: (arg: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, fn: (arg: ClientEvents[E]) => void): void;
  publish(topic: string, data: Payload, opts?: PublishOptions & { ack?: true }): Promise<Uint>;
  publish(topic: string, data: Payload, opts: PublishOptions & { ack: false }): Promise<void>;
  publishJSON(topic: string, value: unknown, opts?: PublishOptions): Promise<Uint>;
  subscribe(pattern: string, cb: (m: Message) => void): Subscription;
  subscribe(pattern: string, opts: SubscribeOptions, cb: (m: Message) => void): Subscription;
  presence(topic: string, cb: (p: Presence) => void, opts?: SubscribeOptions): Subscription;
  request(topic: string, data: Payload, opts?: { timeoutMs?: number; headers?: Record<string, string> }): Promise<Message>;
  flush(timeoutMs?: number): Promise<void>;
  drain(timeoutMs?: number): Promise<void>;
  close(): void;
}

/** Connects and resolves once the first WELCOME arrived. */
export function connect(url?: string, opts?: ClientOptions): Promise<Client>;
export function connect(opts: ClientOptions): Promise<Client>;
