#!/usr/bin/env node
// The unmodified ocean.js 8.6.2 client (npm @oceanprotocol/lib) runs a compute-to-data flow against a node,
// through its public API only, the way ocean.js's test/integration/ComputeFlow.test.ts (and its helpers
// createAssetHelper / handleComputeOrder, copied below) and ocean-cli do.
//
// Usage: node flow.mjs [step ...]     (no step: all of DEFAULT_STEPS, in order)
// A step runs the steps it needs first (`node flow.mjs reuse` runs publish, envs, paid, reuse).
//
// Environment (in): RPC (the chain), NODE_URL (the node), ADDRESS_FILE (Ocean address.json, key
// "development"), PUBLISHER_KEY, CONSUMER_KEY (private keys, ethers Wallets), DATA_URL (a CSV), ALGO_URL
// (a python script that prints and writes "ocean.js rows=<n>"), SLOW_ALGO_URL (a python script that prints
// "ocean.js tick <i>" for a while; logs and stop), OCEAN_MINTER_KEY (owner of the dev Ocean token, mints
// the consumer's payment tokens; default PUBLISHER_KEY), optional JOB_TIMEOUT_S (default 240),
// INDEXING_RETRY_INTERVAL (ms, default 500), INDEXING_MAX_RETRIES (default 240) as in ocean-cli.
//
// Out: one progress line per step on stdout, `[ocean.js] <step> ... ok (1.2 s)`; the HTTP requests
// ocean.js sent on stderr; the last stdout line is one JSON report
// {node, steps: {<name>: {ok, seconds, calls: [{call, args, http: [...]}], ...}}, error?}.
// Exit 1 on the first failure, naming the ocean.js call and the node's answer.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Contract, JsonRpcProvider, Wallet, getAddress, parseUnits, toBeHex } from 'ethers'
import {
  Aquarius,
  ConfigHelper,
  Datatoken,
  EscrowContract,
  LoggerInstance,
  LogLevel,
  Nft,
  NftFactory,
  ProviderInstance,
  ZERO_ADDRESS,
  approveWei,
  getEventFromTx,
  isDefined,
  unitsToAmount
} from '@oceanprotocol/lib'

LoggerInstance.setLevel(LogLevel.Error) // as ocean.js's test/config.ts; errors go to stderr

const DEFAULT_STEPS = ['publish', 'envs', 'free', 'resources-above-max', 'paid', 'reuse', 'logs', 'stop', 'untrusted']
const NEEDS = {
  probe: [],
  publish: [],
  envs: [],
  free: ['publish', 'envs'],
  'resources-above-max': ['publish', 'envs'],
  paid: ['publish', 'envs'],
  reuse: ['paid'],
  logs: ['publish', 'envs'],
  stop: ['publish', 'envs'],
  untrusted: ['publish', 'envs']
}
const OUTPUT_MARK = /ocean\.js rows=(\d+)/
const TICK_MARK = 'ocean.js tick'
const FINISHED = 70
const RUNNING = 40
const PAID_JOB_DURATION = 600 // seconds, maxJobDuration of the paid jobs (ComputeFlow: 900)
// A container checksum is part of the DDO schema; the node's local engine runs python images by name.
const PYTHON_CONTAINER = {
  entrypoint: 'python $ALGO',
  image: 'python',
  tag: '3.11',
  checksum: 'sha256:' + '1'.repeat(64)
}

// --- configuration ------------------------------------------------------------------------------
function env(name, fallback) {
  const value = process.env[name] ?? fallback
  if (value === undefined || value === '') throw new Error(`environment variable ${name} is not set`)
  return value
}

const NODE_URL = env('NODE_URL').replace(/\/+$/, '')
const JOB_TIMEOUT_S = Number(env('JOB_TIMEOUT_S', '240'))
const INDEXING_RETRY_INTERVAL = Number(env('INDEXING_RETRY_INTERVAL', '500'))
const INDEXING_MAX_RETRIES = Number(env('INDEXING_MAX_RETRIES', '240'))

// --- HTTP trace: every request ocean.js sends to the node, and the node's answer when it is an error ------
let activeCall = null // the entry of the ocean.js call running now
const realFetch = globalThis.fetch

function shape(value, depth = 0) {
  if (Array.isArray(value)) return value.length ? `[${shape(value[0], depth)}]` : '[]'
  if (value === null || typeof value !== 'object') return typeof value
  if (depth >= 2) return '{…}'
  return `{${Object.entries(value)
    .map(([k, v]) => (v !== null && typeof v === 'object' ? `${k}:${shape(v, depth + 1)}` : k))
    .join(',')}}`
}

function describeRequest(input, init = {}) {
  const url = new URL(typeof input === 'string' ? input : input.url)
  const keys = [...url.searchParams.keys()]
  const method = (init.method || 'GET').toUpperCase()
  let line = `${method} ${url.pathname}${keys.length ? '?' + keys.join('&') : ''}`
  const headers = init.headers || {}
  if ('Authorization' in headers) line += ` [Authorization: ${String(headers.Authorization)}]`
  if (headers.Range) line += ` [Range: ${headers.Range}]`
  if (typeof init.body === 'string') {
    let body
    try {
      body = JSON.parse(init.body)
    } catch {
      body = undefined
    }
    const type = headers['Content-Type'] || headers['Content-type'] || ''
    line += ` body(${type}) ${body === undefined ? `${init.body.length} bytes` : shape(body)}`
  }
  return line
}

globalThis.fetch = async (input, init) => {
  const target = typeof input === 'string' ? input : input?.url
  if (!target || !target.startsWith(NODE_URL)) return realFetch(input, init)
  const record = { request: describeRequest(input, init) }
  if (activeCall) activeCall.http.push(record)
  let response
  try {
    response = await realFetch(input, init)
  } catch (e) {
    record.error = `no answer: ${e.cause?.message || e.message}`
    throw e
  }
  record.status = response.status
  if (!response.ok) {
    const text = await response.clone().text()
    record.answer = text.length > 1500 ? text.slice(0, 1500) + '…' : text
  }
  process.stderr.write(`[ocean.js]     ${record.request} -> ${record.status}\n`)
  return response
}

// --- steps' bookkeeping -------------------------------------------------------------------------
class FlowError extends Error {
  constructor(message, details = {}) {
    super(message)
    this.details = details
  }
}

let stepCalls = null // the calls of the step running now

function nodeAnswer(entry) {
  const http = entry?.http || []
  const failed = [...http].reverse().find((h) => h.error || (h.status && h.status >= 400))
  const last = failed || http[http.length - 1]
  if (!last) return undefined
  return `${last.request} -> ${last.error || last.status}${last.answer !== undefined ? ' ' + last.answer : ''}`
}

/** Runs one ocean.js call, recording its HTTP requests; a throw or a null answer becomes a FlowError. */
async function call(name, args, thunk, { allowNull = false } = {}) {
  const previous = stepCalls[stepCalls.length - 1]
  let entry = { call: name, args, http: [] }
  if (previous && previous.call === name && previous.args === args) {
    entry = previous // a poll: one entry, counted, with the last try's requests
    entry.times = (entry.times || 1) + 1
    entry.http = []
  } else stepCalls.push(entry)
  activeCall = entry
  try {
    const result = await thunk()
    if (!allowNull && (result === null || result === undefined)) {
      const onlyRoot = entry.http.length > 0 && entry.http.every((h) => h.request.startsWith('GET / '))
      const why = onlyRoot
        ? "ocean.js found no endpoint for it in the node's root serviceEndpoints map"
        : 'ocean.js logs and swallows the error: see stderr'
      throw new FlowError(`${name} returned ${result} (${why})`, { call: name, node_answer: nodeAnswer(entry) })
    }
    return result
  } catch (e) {
    if (e instanceof FlowError) throw e
    throw new FlowError(`${name} threw: ${e.message}`, { call: name, node_answer: nodeAnswer(entry) })
  } finally {
    activeCall = null
  }
}

/** Runs a call that must be refused; returns the refusal (message, HTTP status and the node's answer). */
async function refused(name, args, thunk) {
  let result
  try {
    result = await call(name, args, thunk)
  } catch (e) {
    if (!(e instanceof FlowError)) throw e
    const entry = stepCalls[stepCalls.length - 1]
    const status = [...entry.http].reverse().find((h) => h.status && h.status >= 400)?.status
    return { message: e.message, status, node_answer: e.details.node_answer }
  }
  throw new FlowError(`${name} was accepted but must be refused: ${JSON.stringify(result).slice(0, 800)}`, {
    call: name,
    node_answer: nodeAnswer(stepCalls[stepCalls.length - 1])
  })
}

/** Runs a call whose outcome is only recorded (probe): {ok, answer} or {ok: false, message, node_answer}. */
async function attempt(name, args, thunk) {
  try {
    const result = await call(name, args, thunk)
    return { ok: true, answer: JSON.stringify(result).slice(0, 600) }
  } catch (e) {
    if (!(e instanceof FlowError)) throw e
    return { ok: false, message: e.message, node_answer: e.details.node_answer }
  }
}

function check(condition, message, answer) {
  if (!condition) {
    const last = stepCalls[stepCalls.length - 1]
    throw new FlowError(message, {
      call: last?.call,
      node_answer: answer !== undefined ? JSON.stringify(answer).slice(0, 1500) : nodeAnswer(last)
    })
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const sha256 = (text) => createHash('sha256').update(text).digest('hex')

// --- the chain and the accounts -----------------------------------------------------------------
// cacheTimeout -1: ethers caches identical calls for 250 ms by default, so two transactions of one wallet in
// quick succession (ocean.js reads the nonce with eth_getTransactionCount) would get the same nonce
const provider = new JsonRpcProvider(env('RPC'), undefined, {
  staticNetwork: true,
  pollingInterval: 100,
  cacheTimeout: -1
})
const publisher = new Wallet(env('PUBLISHER_KEY'), provider)
const consumer = new Wallet(env('CONSUMER_KEY'), provider)
const addresses = JSON.parse(readFileSync(env('ADDRESS_FILE'), 'utf8')).development
const aquarius = new Aquarius(NODE_URL)
const state = {} // what steps hand to later steps

async function oceanConfig() {
  const chainId = Number((await provider.getNetwork()).chainId)
  const config = new ConfigHelper().getConfig(chainId) // contract addresses from ADDRESS_FILE
  check(config, `ocean.js has no configuration for chain ${chainId}`)
  Object.assign(config, { oceanNodeUri: NODE_URL, nodeUri: env('RPC') })
  return { chainId, config }
}

// --- ocean.js's test helpers (test/integration/helpers.ts), with the same calls -----------------
/** createAssetHelper: NFT + datatoken, encrypt files and DDO, validate, setMetadata; returns did + tx. */
async function createAsset(name, symbol, owner, assetFiles, ddo) {
  const { chainId, config } = state.chain
  const ownerAddress = await owner.getAddress()
  const nft = new Nft(owner, chainId, config)
  const nftFactory = new NftFactory(config.nftFactoryAddress, owner, chainId, config)
  ddo.chainId = chainId
  const nftParams = { name, symbol, templateIndex: 1, tokenURI: 'aaa', transferable: true, owner: ownerAddress }
  const datatokenParams = {
    templateIndex: 1,
    cap: '100000',
    feeAmount: '0',
    paymentCollector: ZERO_ADDRESS,
    feeToken: ZERO_ADDRESS,
    minter: ownerAddress,
    mpFeeAddress: ZERO_ADDRESS
  }
  const bundle = await call('NftFactory.createNftWithDatatoken', `${name}, templateIndex 1`, () =>
    nftFactory.createNftWithDatatoken(nftParams, datatokenParams, false)
  )
  const receipt = await bundle.wait()
  const nftAddress = getEventFromTx(receipt, 'NFTCreated').args.newTokenAddress
  const datatokenAddress = getEventFromTx(receipt, 'TokenCreated').args.newTokenAddress

  const files = { datatokenAddress, nftAddress, files: assetFiles }
  ddo.services[0].files = await call(
    'ProviderInstance.encrypt',
    `{datatokenAddress, nftAddress, files}, ${chainId}, node, publisher`,
    () => ProviderInstance.encrypt(files, chainId, NODE_URL, owner)
  )
  check(
    /^0x[0-9a-f]+$/i.test(ddo.services[0].files),
    `encrypt answered ${JSON.stringify(ddo.services[0].files).slice(0, 300)}, not 0x<hex> (ocean.js does not check the status)`
  )
  ddo.services[0].datatokenAddress = datatokenAddress
  ddo.services[0].serviceEndpoint = NODE_URL
  ddo.nftAddress = nftAddress
  ddo.id = 'did:op:' + sha256(getAddress(nftAddress) + chainId.toString(10))

  const encryptedDdo = await call('ProviderInstance.encrypt', `ddo ${ddo.id}, ${chainId}, node, publisher`, () =>
    ProviderInstance.encrypt(ddo, chainId, NODE_URL, owner)
  )
  check(
    /^0x[0-9a-f]+$/i.test(encryptedDdo),
    `encrypt answered ${JSON.stringify(encryptedDdo).slice(0, 300)}, not 0x<hex>`
  )
  const validation = await call('Aquarius.validate', `ddo ${ddo.id}, publisher, node`, () =>
    aquarius.validate(ddo, owner, NODE_URL)
  )
  check(/^0x[0-9a-f]{64}$/i.test(validation.hash ?? ''), `Aquarius.validate gave hash ${validation.hash}`)
  const tx = await call('Nft.setMetadata', `nft, publisher, 0, node, '', 0x02, encrypted ddo, ${validation.hash}`, () =>
    nft.setMetadata(nftAddress, ownerAddress, 0, NODE_URL, '', toBeHex(2), encryptedDdo, validation.hash)
  )
  await tx.wait() // mined before the wallet's next transaction
  return { did: ddo.id, txid: tx.hash, datatokenAddress, nftAddress }
}

/** What ocean-cli does before each paid start: EscrowContract.verifyFundsForEscrowPayment (approve, deposit when
 * nothing is available, authorize the node once), then check the authorization. */
async function fundEscrow(payment, environment) {
  const { chainId, config } = state.chain
  const token = addresses.Ocean
  const escrow = new EscrowContract(getAddress(payment.escrowAddress), consumer, chainId, config)
  const amountToDeposit = await unitsToAmount(consumer, token, (BigInt(payment.amount) * 2n).toString())
  const verified = await call(
    'EscrowContract.verifyFundsForEscrowPayment',
    `Ocean, ${environment.consumerAddress}, ${amountToDeposit}, ${payment.amount}, ${payment.minLockSeconds}, '10'`,
    () =>
      escrow.verifyFundsForEscrowPayment(
        token,
        environment.consumerAddress,
        amountToDeposit,
        payment.amount.toString(),
        payment.minLockSeconds.toString(),
        '10'
      )
  )
  check(verified.isValid, `verifyFundsForEscrowPayment: ${verified.message}`)
  // verifyFundsForEscrowPayment deposits only when nothing is available; top up what this lock still needs
  // (ocean-cli's depositEscrow), e.g. while an earlier job's lock holds part of the funds
  const funds = await escrow.getUserFunds(consumer.address, token)
  const available = BigInt(funds[0])
  if (available < BigInt(payment.amount)) {
    const shortfall = await unitsToAmount(consumer, token, (BigInt(payment.amount) - available).toString())
    await call('EscrowContract.deposit', `Ocean, ${shortfall} (what the lock still needs)`, () =>
      escrow.deposit(token, shortfall)
    )
  }
  const auth = await call('EscrowContract.getAuthorizations', 'Ocean, consumer, payee', () =>
    escrow.getAuthorizations(token, consumer.address, environment.consumerAddress)
  )
  check(auth.length > 0, 'the consumer has no escrow authorization for the node')
}

/** handleComputeOrder: reuse a valid order, reuseOrder when only the provider fee expired, else startOrder
 * with consumer = the environment's consumerAddress. */
async function handleComputeOrder(order, datatokenAddress, payer, consumerAddress, serviceIndex, datatoken) {
  const { chainId, config } = state.chain
  check(config.chainId === chainId, 'Chain ID from DDO is different than the configured network.')
  const fee = order.providerFee
  if (fee && fee.providerFeeAmount && Number(fee.providerFeeAmount) > 0) {
    await call(
      'approveWei',
      `payer, config, payer, ${fee.providerFeeToken}, ${datatokenAddress}, ${fee.providerFeeAmount}`,
      () => approveWei(payer, config, payer.address, fee.providerFeeToken, datatokenAddress, fee.providerFeeAmount)
    )
  }
  if (order.validOrder) {
    if (!fee) return order.validOrder
    const tx = await call('Datatoken.reuseOrder', `${datatokenAddress}, ${order.validOrder}, providerFee`, () =>
      datatoken.reuseOrder(datatokenAddress, order.validOrder, fee)
    )
    return getEventFromTx(await tx.wait(), 'OrderReused').transactionHash
  }
  const tx = await call(
    'Datatoken.startOrder',
    `${datatokenAddress}, ${consumerAddress}, ${serviceIndex}, providerFee`,
    () => datatoken.startOrder(datatokenAddress, consumerAddress, serviceIndex, fee)
  )
  return getEventFromTx(await tx.wait(), 'OrderStarted').transactionHash
}

// --- DDOs (the shape of ComputeFlow's, with our files and a python container) ----------------------
function algorithmDdo(name) {
  return {
    '@context': ['https://w3id.org/did/v1'],
    id: '',
    version: '4.1.0',
    chainId: 0,
    nftAddress: '0x0',
    metadata: {
      created: '2026-11-22T00:00:00Z',
      updated: '2026-11-22T00:00:00Z',
      type: 'algorithm',
      name,
      description: `${name}, published by the ocean.js client test`,
      tags: [''],
      author: 'ocean.js flow',
      license: 'CC0: PublicDomain',
      additionalInformation: { termsAndConditions: true },
      algorithm: { language: 'python', version: '0.1', container: { ...PYTHON_CONTAINER } }
    },
    services: [
      {
        id: sha256(`access ${name}`),
        type: 'access',
        files: '',
        datatokenAddress: '0x0',
        serviceEndpoint: NODE_URL,
        timeout: 0
      }
    ]
  }
}

function datasetDdo(trusted) {
  return {
    '@context': ['https://w3id.org/did/v1'],
    id: '',
    version: '4.1.0',
    chainId: 0,
    nftAddress: '0x0',
    metadata: {
      created: '2026-11-22T00:00:00Z',
      updated: '2026-11-22T00:00:00Z',
      type: 'dataset',
      name: 'ocean.js dataset',
      description: 'a CSV that only trusted algorithms may compute on',
      tags: [''],
      author: 'ocean.js flow',
      license: 'CC0: PublicDomain',
      additionalInformation: { termsAndConditions: true }
    },
    services: [
      {
        id: sha256('compute ocean.js dataset'),
        type: 'compute',
        files: '',
        datatokenAddress: '0x0',
        serviceEndpoint: NODE_URL,
        timeout: 3600, // orders stay valid for the reuse step
        compute: {
          allowRawAlgorithm: false,
          allowNetworkAccess: true,
          publisherTrustedAlgorithmPublishers: [],
          publisherTrustedAlgorithms: trusted
        }
      }
    ]
  }
}

const urlFile = (url) => [{ type: 'url', url, method: 'GET' }]

async function waitForIndexer(did, txid) {
  const ddo = await call(
    'Aquarius.waitForIndexer',
    `${did}, ${txid}, undefined, ${INDEXING_RETRY_INTERVAL}, ${INDEXING_MAX_RETRIES}`,
    () => aquarius.waitForIndexer(did, txid, undefined, INDEXING_RETRY_INTERVAL, INDEXING_MAX_RETRIES),
    { allowNull: true }
  )
  if (ddo) return ddo
  // say what the node serves instead (waitForIndexer hides it)
  let served
  try {
    served = await call('Aquarius.resolve', did, () => aquarius.resolve(did))
  } catch (e) {
    served = e.details?.node_answer
  }
  throw new FlowError(
    `Aquarius.waitForIndexer gave up on ${did}: it needs GET /api/aquarius/assets/ddo/<did> -> 200 with a ` +
      `v4 DDO whose indexedMetadata.event.txid === ${txid}`,
    {
      call: 'Aquarius.waitForIndexer',
      node_answer:
        typeof served === 'string'
          ? served
          : JSON.stringify({
              keys: Object.keys(served || {}),
              indexedMetadata: served?.indexedMetadata,
              event: served?.event
            })
    }
  )
}

async function trustedEntry(algo) {
  const service = algo.services[0]
  const files = await call('ProviderInstance.checkDidFiles', `${algo.id}, ${service.id}, node, true`, () =>
    ProviderInstance.checkDidFiles(algo.id, service.id, NODE_URL, true)
  )
  check(Array.isArray(files) && files.every((f) => f.checksum), 'fileinfo gave no checksum for the algorithm', files)
  const container = algo.metadata.algorithm.container
  return {
    did: algo.id,
    filesChecksum: files.map((f) => f.checksum).join(''),
    containerSectionChecksum: sha256(container.entrypoint + container.checksum)
  }
}

// --- compute helpers ----------------------------------------------------------------------------
const asset = (ddo, transferTxId) => ({
  documentId: ddo.id,
  serviceId: ddo.services[0].id,
  ...(transferTxId ? { transferTxId } : {})
})

async function jobStatus(jobId) {
  const jobs = await call('ProviderInstance.computeStatus', `node, consumer, ${jobId}`, () =>
    ProviderInstance.computeStatus(NODE_URL, consumer, jobId)
  )
  const list = Array.isArray(jobs) ? jobs : [jobs]
  const job = list.find((j) => j && j.jobId === jobId)
  check(job, `computeStatus has no job ${jobId}`, jobs)
  return job
}

const finished = (job) => job.status >= FINISHED || (isDefined(job.dateFinished) && Number(job.dateFinished) > 0)

/** Polls computeStatus until the job finished (or `until` holds); returns the job and its statuses. */
async function waitForJob(jobId, until = finished) {
  const deadline = Date.now() + JOB_TIMEOUT_S * 1000
  const seen = []
  for (;;) {
    const job = await jobStatus(jobId)
    if (seen[seen.length - 1] !== job.status) seen.push(job.status)
    if (until(job) || finished(job)) return { job, statuses: seen }
    check(Date.now() < deadline, `job ${jobId} still at status ${job.status} after ${JOB_TIMEOUT_S} s`, job)
    await sleep(500)
  }
}

/** The output results fetched through getComputeResultUrl; fails unless the algorithm's line is in one. */
async function readOutput(job) {
  const results = job.results || []
  const outputs = results.map((r, i) => ({ ...r, index: r.index ?? i })).filter((r) => r.type === 'output')
  check(outputs.length > 0, `job ${job.jobId} lists no result of type "output"`, results)
  for (const result of outputs) {
    const url = await call(
      'ProviderInstance.getComputeResultUrl',
      `node, consumer, ${job.jobId}, ${result.index}`,
      () => ProviderInstance.getComputeResultUrl(NODE_URL, consumer, job.jobId, result.index)
    )
    const response = await call('fetch(resultUrl)', url.replace(/signature=[^&]+/, 'signature=…'), () => fetch(url))
    const body = Buffer.from(await response.arrayBuffer())
    check(
      response.ok,
      `GET computeResult index ${result.index} answered ${response.status}`,
      body.toString().slice(0, 500)
    )
    const found = OUTPUT_MARK.exec(body.toString('latin1'))
    if (found) {
      return {
        output: found[0],
        rows: Number(found[1]),
        index: result.index,
        filename: result.filename,
        bytes: body.length
      }
    }
  }
  throw new FlowError(`no output of job ${job.jobId} holds "ocean.js rows=<n>"`, {
    call: 'fetch(resultUrl)',
    node_answer: JSON.stringify(outputs)
  })
}

/** The stream of ComputeFlow's last test: getComputeResult(…, index) yields the result's bytes. */
async function streamResult(jobId, index) {
  const stream = await call('ProviderInstance.getComputeResult', `node, consumer, ${jobId}, ${index}`, () =>
    ProviderInstance.getComputeResult(NODE_URL, consumer, jobId, index)
  )
  let bytes = 0
  for await (const chunk of stream) bytes += chunk.length
  check(bytes > 0, 'getComputeResult streamed no bytes')
  return bytes
}

function freeEnvironment() {
  const found = state.envs.find((ce) => ce.priceMin === 0 || isDefined(ce.free)) // ComputeFlow's choice
  check(found, 'no free environment (priceMin 0 or a free block)', state.envs)
  return found
}

function paidEnvironment() {
  const { chainId } = state.chain
  const found = state.envs.find((ce) => ce.fees?.[chainId]?.some((fee) => fee.prices?.length))
  check(found, `no environment with fees for chain ${chainId}`, state.envs)
  return found
}

function resourcesOf(environment, pick) {
  const byId = Object.fromEntries((environment.resources || []).map((r) => [r.id, r]))
  for (const id of ['cpu', 'ram', 'disk']) {
    check(byId[id], `environment ${environment.id} has no "${id}" resource`, environment.resources)
  }
  return ['cpu', 'ram', 'disk'].map((id) => ({ id, amount: pick(byId[id]) }))
}

async function startFree(algo) {
  const environment = freeEnvironment()
  const jobs = await call(
    'ProviderInstance.freeComputeStart',
    `node, consumer, ${environment.id}, [dataset], algorithm+meta`,
    () =>
      ProviderInstance.freeComputeStart(NODE_URL, consumer, environment.id, [asset(state.dataset)], {
        ...asset(algo),
        meta: algo.metadata.algorithm
      })
  )
  check(Array.isArray(jobs) && jobs[0]?.jobId, 'freeComputeStart answered no [job]', jobs)
  return jobs[0].jobId
}

// --- the steps ----------------------------------------------------------------------------------
const STEPS = {
  /** What the node answers now to the calls that need nothing published (not in the default run). */
  async probe() {
    state.chain = await oceanConfig()
    // the root map as ocean.js's HttpProvider reads it first in every call (GET {node})
    const root = await call('fetch(node root)', 'GET /', async () => (await fetch(NODE_URL)).json())
    const names = Object.keys(root.serviceEndpoints || {})
    const wanted = [
      'nonce',
      'encrypt',
      'fileinfo',
      'computeEnvironments',
      'initializeCompute',
      'computeStart',
      'freeCompute',
      'computeStatus',
      'computeStop',
      'computeResult',
      'computeStreamableLogs',
      'generateAuthToken'
    ]
    const fakeDid = 'did:op:' + '0'.repeat(64)
    const fake = { documentId: fakeDid, serviceId: '0' }
    const resources = [
      { id: 'cpu', amount: 1 },
      { id: 'ram', amount: 1 },
      { id: 'disk', amount: 0 }
    ]
    return {
      root_keys: Object.keys(root),
      missing_endpoints: wanted.filter((n) => !names.some((m) => m.toLowerCase() === n.toLowerCase())),
      isValidProvider: await attempt('ProviderInstance.isValidProvider', 'node', () =>
        ProviderInstance.isValidProvider(NODE_URL)
      ),
      getNonce: await attempt('ProviderInstance.getNonce', 'node, consumer', () =>
        ProviderInstance.getNonce(NODE_URL, consumer.address)
      ),
      getComputeEnvironments: await attempt('ProviderInstance.getComputeEnvironments', 'node', () =>
        ProviderInstance.getComputeEnvironments(NODE_URL)
      ),
      encrypt: await attempt('ProviderInstance.encrypt', '{probe: 1}, chainId, node, consumer', () =>
        ProviderInstance.encrypt({ probe: 1 }, state.chain.chainId, NODE_URL, consumer)
      ),
      computeStatus: await attempt('ProviderInstance.computeStatus', 'node, consumer, no-such-job', () =>
        ProviderInstance.computeStatus(NODE_URL, consumer, 'no-such-job')
      ),
      initializeCompute: await attempt(
        'ProviderInstance.initializeCompute',
        '[unknown did], unknown algorithm, local-cpu, Ocean, 60, node, consumer, resources, chainId',
        () =>
          ProviderInstance.initializeCompute(
            [fake],
            fake,
            'local-cpu',
            addresses.Ocean,
            60,
            NODE_URL,
            consumer.address,
            resources,
            state.chain.chainId
          )
      ),
      freeComputeStart: await attempt(
        'ProviderInstance.freeComputeStart',
        'node, consumer, local-cpu, [unknown did], unknown algorithm',
        () => ProviderInstance.freeComputeStart(NODE_URL, consumer, 'local-cpu', [fake], fake)
      ),
      computeStop: await attempt('ProviderInstance.computeStop', 'no-such-job, node, consumer', () =>
        ProviderInstance.computeStop('no-such-job', NODE_URL, consumer)
      ),
      resolve: await attempt('Aquarius.resolve', fakeDid, () => aquarius.resolve(fakeDid))
    }
  },

  async publish() {
    const chain = await oceanConfig()
    state.chain = chain
    const made = {}
    const algos = [
      ['trusted', 'ocean.js algorithm', env('ALGO_URL')],
      ['untrusted', 'ocean.js untrusted algorithm', env('ALGO_URL')]
    ]
    if (process.env.SLOW_ALGO_URL) algos.push(['slow', 'ocean.js slow algorithm', process.env.SLOW_ALGO_URL])
    for (const [key, name, url] of algos) {
      made[key] = await createAsset(name, 'A1M', publisher, urlFile(url), algorithmDdo(name))
    }
    state.algos = {}
    for (const [key] of algos) state.algos[key] = await waitForIndexer(made[key].did, made[key].txid)
    const trusted = [await trustedEntry(state.algos.trusted)]
    if (state.algos.slow) trusted.push(await trustedEntry(state.algos.slow))
    made.dataset = await createAsset(
      'ocean.js dataset',
      'D1M',
      publisher,
      urlFile(env('DATA_URL')),
      datasetDdo(trusted)
    )
    state.dataset = await waitForIndexer(made.dataset.did, made.dataset.txid)
    const datatoken = new Datatoken(publisher, chain.chainId, chain.config)
    for (const ddo of [state.dataset, ...Object.values(state.algos)]) {
      const dt = ddo.services[0].datatokenAddress
      await call('Datatoken.mint', `${dt}, publisher, '10', consumer`, () =>
        datatoken.mint(dt, publisher.address, '10', consumer.address)
      )
    }
    return {
      dids: Object.fromEntries(Object.entries(made).map(([k, v]) => [k, v.did])),
      metadata_txids: Object.fromEntries(Object.entries(made).map(([k, v]) => [k, v.txid])),
      trusted_algorithms: trusted
    }
  },

  async envs() {
    if (!state.chain) state.chain = await oceanConfig()
    const envs = await call('ProviderInstance.getComputeEnvironments', 'node', () =>
      ProviderInstance.getComputeEnvironments(NODE_URL)
    )
    check(Array.isArray(envs), 'computeEnvironments must answer a flat array of environments', envs)
    check(
      envs.length > 0 && envs.every((e) => e.id && e.consumerAddress),
      'no environment with id and consumerAddress',
      envs
    )
    state.envs = envs
    return {
      environments: envs.map((e) => ({
        id: e.id,
        consumerAddress: e.consumerAddress,
        free: isDefined(e.free),
        fees: Object.keys(e.fees || {}),
        resources: (e.resources || []).map((r) => `${r.id}<=${r.max}`)
      }))
    }
  },

  async free() {
    const jobId = await startFree(state.algos.trusted)
    const { job, statuses } = await waitForJob(jobId)
    check(job.status === FINISHED, `free job ended at status ${job.status} (${job.statusText})`, job)
    const output = await readOutput(job)
    const streamed = await streamResult(jobId, output.index)
    return { jobId, statuses, ...output, streamed_bytes: streamed }
  },

  async 'resources-above-max'() {
    const environment = state.envs.find((ce) => ce.fees?.[state.chain.chainId]) || state.envs[0]
    const resources = resourcesOf(environment, (r) => r.max + (r.id === 'disk' ? 100 : 1))
    const refusal = await refused(
      'ProviderInstance.initializeCompute',
      `…, ${environment.id}, Ocean, ${PAID_JOB_DURATION}, node, consumer, ${JSON.stringify(resources)}, chainId`,
      () =>
        ProviderInstance.initializeCompute(
          [asset(state.dataset)],
          asset(state.algos.trusted),
          environment.id,
          addresses.Ocean,
          PAID_JOB_DURATION,
          NODE_URL,
          consumer.address,
          resources,
          state.chain.chainId
        )
    )
    check(
      refusal.status && ![404, 405, 501].includes(refusal.status),
      `initializeCompute failed without a refusal from the node (${refusal.status})`,
      refusal
    )
    return { resources, refusal }
  },

  async paid() {
    const { chainId, config } = state.chain
    const environment = paidEnvironment()
    const token = addresses.Ocean
    // ComputeFlow mints OCEAN to the consumer (the dev token's owner mints)
    const minter = new Wallet(env('OCEAN_MINTER_KEY', env('PUBLISHER_KEY')), provider)
    const ocean = new Contract(token, ['function mint(address to, uint256 value)'], minter)
    await (await ocean.mint(consumer.address, parseUnits('1000', 18))).wait()

    const resources = resourcesOf(environment, (r) =>
      r.id === 'disk' ? Math.max(r.min ?? 0, 0) : Math.max(r.min ?? 1, 1)
    )
    const assets = [asset(state.dataset)]
    const algo = asset(state.algos.trusted)
    const init = await call(
      'ProviderInstance.initializeCompute',
      `[dataset], algorithm, ${environment.id}, Ocean, ${PAID_JOB_DURATION}, node, consumer, ${JSON.stringify(resources)}, ${chainId}`,
      () =>
        ProviderInstance.initializeCompute(
          assets,
          algo,
          environment.id,
          token,
          PAID_JOB_DURATION,
          NODE_URL,
          consumer.address,
          resources,
          chainId
        )
    )
    const payment = init.payment
    check(payment, 'initializeCompute answered no payment', init)
    check(addresses.Escrow, 'the address file has no Escrow for "development"', payment)
    check(
      payment.escrowAddress === addresses.Escrow,
      `payment.escrowAddress is not the Escrow of the address file (${addresses.Escrow})`,
      payment
    )
    check(
      payment.payee === environment.consumerAddress,
      'payment.payee is not the environment consumerAddress',
      payment
    )
    check(payment.token === token, 'payment.token is not the Ocean token asked for', payment)
    check(BigInt(payment.amount) > 0n, 'payment.amount is not a positive wei amount', payment)
    check(!('error' in init.algorithm), 'Cannot order algorithm', init.algorithm)

    await fundEscrow(payment, environment)

    const datatoken = new Datatoken(consumer, chainId, config)
    algo.transferTxId = await handleComputeOrder(
      init.algorithm,
      state.algos.trusted.services[0].datatokenAddress,
      consumer,
      environment.consumerAddress,
      0,
      datatoken
    )
    for (let i = 0; i < init.datasets.length; i++) {
      assets[i].transferTxId = await handleComputeOrder(
        init.datasets[i],
        state.dataset.services[0].datatokenAddress,
        consumer,
        environment.consumerAddress,
        0,
        datatoken
      )
    }
    algo.meta = state.algos.trusted.metadata.algorithm
    const jobs = await call(
      'ProviderInstance.computeStart',
      `node, consumer, ${environment.id}, [dataset+tx], algorithm+tx+meta, ${PAID_JOB_DURATION}, Ocean, resources, ${chainId}`,
      () =>
        ProviderInstance.computeStart(
          NODE_URL,
          consumer,
          environment.id,
          assets,
          algo,
          PAID_JOB_DURATION,
          token,
          resources,
          chainId
        )
    )
    check(Array.isArray(jobs) && jobs[0]?.jobId, 'computeStart answered no [job]', jobs)
    const jobId = jobs[0].jobId
    const { job, statuses } = await waitForJob(jobId)
    check(job.status === FINISHED, `paid job ended at status ${job.status} (${job.statusText})`, job)
    const output = await readOutput(job)
    state.paid = { environment, resources, datasetTx: assets[0].transferTxId, algoTx: algo.transferTxId }
    return {
      jobId,
      statuses,
      ...output,
      payment,
      lockTx: jobs[0].payment?.lockTx,
      orders: { dataset: assets[0].transferTxId, algorithm: algo.transferTxId }
    }
  },

  async reuse() {
    const { chainId } = state.chain
    const { environment, resources, datasetTx, algoTx } = state.paid
    const assets = [asset(state.dataset, datasetTx)]
    const algo = asset(state.algos.trusted, algoTx)
    const init = await call(
      'ProviderInstance.initializeCompute',
      `[dataset+tx], algorithm+tx, ${environment.id}, Ocean, ${PAID_JOB_DURATION}, node, consumer, resources, ${chainId}`,
      () =>
        ProviderInstance.initializeCompute(
          assets,
          algo,
          environment.id,
          addresses.Ocean,
          PAID_JOB_DURATION,
          NODE_URL,
          consumer.address,
          resources,
          chainId
        )
    )
    check(
      init.algorithm?.validOrder === algoTx && !init.algorithm.providerFee,
      'the algorithm order is not reused as is (validOrder = the same tx, no providerFee)',
      init.algorithm
    )
    check(
      init.datasets?.[0]?.validOrder === datasetTx && !init.datasets[0].providerFee,
      'the dataset order is not reused as is',
      init.datasets
    )
    await fundEscrow(init.payment, environment)
    algo.meta = state.algos.trusted.metadata.algorithm
    const jobs = await call(
      'ProviderInstance.computeStart',
      `node, consumer, ${environment.id}, [dataset+same tx], algorithm+same tx, ${PAID_JOB_DURATION}, Ocean, resources, ${chainId}`,
      () =>
        ProviderInstance.computeStart(
          NODE_URL,
          consumer,
          environment.id,
          assets,
          algo,
          PAID_JOB_DURATION,
          addresses.Ocean,
          resources,
          chainId
        )
    )
    check(Array.isArray(jobs) && jobs[0]?.jobId, 'computeStart answered no [job]', jobs)
    const { job, statuses } = await waitForJob(jobs[0].jobId)
    check(job.status === FINISHED, `reused-order job ended at status ${job.status} (${job.statusText})`, job)
    return { jobId: job.jobId, statuses, ...(await readOutput(job)) }
  },

  async logs() {
    check(state.algos.slow, 'SLOW_ALGO_URL is not set: no slow algorithm to stream logs of')
    const jobId = await startFree(state.algos.slow)
    const { job } = await waitForJob(jobId, (j) => j.status >= RUNNING)
    check(!finished(job), `the slow job finished before its logs were read (status ${job.status})`, job)
    const signal = AbortSignal.timeout(30_000)
    const stream = await call('ProviderInstance.computeStreamableLogs', `node, consumer, ${jobId}, signal`, () =>
      ProviderInstance.computeStreamableLogs(NODE_URL, consumer, jobId, signal)
    )
    let text = ''
    try {
      for await (const chunk of stream) {
        text += Buffer.from(chunk).toString()
        if (text.includes(TICK_MARK)) break
      }
    } catch (e) {
      if (!signal.aborted) throw e // else: 30 s without the tick line, checked below
    }
    check(text.includes(TICK_MARK), `the streamed logs never showed "${TICK_MARK}"`, text.slice(-500))
    await call('ProviderInstance.computeStop', `${jobId}, node, consumer`, () =>
      ProviderInstance.computeStop(jobId, NODE_URL, consumer)
    )
    return { jobId, logs: text.slice(0, 300) }
  },

  async stop() {
    check(state.algos.slow, 'SLOW_ALGO_URL is not set: no slow job to stop')
    const jobId = await startFree(state.algos.slow)
    const { job: running } = await waitForJob(jobId, (j) => j.status >= RUNNING)
    check(!finished(running), `the slow job finished before it could be stopped (status ${running.status})`, running)
    const stoppedAt = Date.now()
    const answer = await call('ProviderInstance.computeStop', `${jobId}, node, consumer`, () =>
      ProviderInstance.computeStop(jobId, NODE_URL, consumer)
    )
    const { job, statuses } = await waitForJob(jobId)
    const seconds = (Date.now() - stoppedAt) / 1000
    check(seconds < 20, `the stopped job took ${seconds} s to end (the slow algorithm runs 40 s)`, job)
    return {
      jobId,
      stop_answer: shape(answer),
      statuses,
      final: { status: job.status, statusText: job.statusText },
      seconds_to_end: seconds
    }
  },

  async untrusted() {
    const environment = freeEnvironment()
    const algo = state.algos.untrusted
    const initRefusal = await refused(
      'ProviderInstance.initializeCompute',
      `[dataset], untrusted algorithm, ${environment.id}, …`,
      () =>
        ProviderInstance.initializeCompute(
          [asset(state.dataset)],
          asset(algo),
          environment.id,
          addresses.Ocean,
          PAID_JOB_DURATION,
          NODE_URL,
          consumer.address,
          resourcesOf(environment, (r) => Math.max(r.min ?? 0, r.id === 'disk' ? 0 : 1)),
          state.chain.chainId
        )
    )
    check(
      /not allowed to run on the dataset/.test(initRefusal.message), // ocean-node's words
      'initializeCompute refused the untrusted algorithm, but not for trust',
      initRefusal
    )
    const freeRefusal = await refused(
      'ProviderInstance.freeComputeStart',
      `node, consumer, ${environment.id}, [dataset], untrusted algorithm+meta`,
      () =>
        ProviderInstance.freeComputeStart(NODE_URL, consumer, environment.id, [asset(state.dataset)], {
          ...asset(algo),
          meta: algo.metadata.algorithm
        })
    )
    check(
      /not allowed to run on the dataset/.test(freeRefusal.message),
      'freeComputeStart refused the untrusted algorithm, but not for trust',
      freeRefusal
    )
    return { initializeCompute: initRefusal, freeComputeStart: freeRefusal }
  }
}

// --- main ---------------------------------------------------------------------------------------
function plan(requested) {
  const order = []
  const visit = (name) => {
    if (!(name in NEEDS)) throw new Error(`unknown step ${name}; steps: ${Object.keys(NEEDS).join(', ')}`)
    for (const need of NEEDS[name]) visit(need)
    if (!order.includes(name)) order.push(name)
  }
  for (const name of requested.length ? requested : DEFAULT_STEPS) visit(name)
  return order
}

async function main() {
  const report = { node: NODE_URL, steps: {} }
  let failed = false
  try {
    for (const name of plan(process.argv.slice(2))) {
      stepCalls = []
      const started = performance.now()
      const seconds = () => Math.round((performance.now() - started) / 100) / 10
      try {
        const details = await STEPS[name]()
        report.steps[name] = { ok: true, seconds: seconds(), ...details, calls: stepCalls }
        console.log(`[ocean.js] ${name} ... ok (${seconds()} s)`)
      } catch (e) {
        const details = e instanceof FlowError ? e.details : { stack: e.stack }
        report.steps[name] = { ok: false, seconds: seconds(), calls: stepCalls }
        report.error = { step: name, message: e.message, ...details }
        console.log(`[ocean.js] ${name} ... FAILED (${seconds()} s): ${e.message}`)
        if (details.node_answer) console.log(`[ocean.js]   the node answered: ${details.node_answer}`)
        failed = true
        break
      }
    }
  } catch (e) {
    report.error = { message: e.message }
    failed = true
  }
  console.log(JSON.stringify(report))
  provider.destroy()
  process.exit(failed ? 1 : 0)
}

await main()
