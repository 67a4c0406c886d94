// A dcmjs-dimse peer for the interoperability tests (tests/support/peers/dcmjs.py runs it).
//
// Usage: node dcmjs_peer.js JOB_JSON. The job names one operation against the adapter; the
// script prints one JSON object on stdout with what came back on the wire, then exits 0 (a
// DICOM failure is reported in the JSON, not by the exit code; exit 1 means the script broke).
//
// Job fields: op (echo | store | find | move | get | commit), host, port, calling, called,
// files (store), keys (find: a naturalized dataset), study (move, get), destination and
// listen_port (move: our own storage SCP; commit: our own N-EVENT-REPORT SCP), refs (commit:
// [[sop class, sop instance], ...]), transaction (commit), tls ({key, cert, ca} PEM paths),
// user_identity ({type, primary, secondary, response}), timeout (seconds).
'use strict';

const fs = require('fs');
const dimse = require('dcmjs-dimse');

const { Client, Server, Scp, Dataset } = dimse;
const { CEchoRequest, CStoreRequest, CFindRequest, CMoveRequest, CGetRequest, NActionRequest } =
  dimse.requests;
const { CStoreResponse, NEventReportResponse } = dimse.responses;
const { Status, PresentationContextResult, SopClass, TransferSyntax } = dimse.constants;

const job = JSON.parse(process.argv[2]);
const result = { op: job.op, statuses: [], datasets: [], received: [], errors: [] };
let finished = false;

function finish() {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

setTimeout(() => {
  result.errors.push('timeout');
  finish();
}, (job.timeout || 30) * 1000);

function tlsOptions() {
  if (!job.tls) return undefined;
  return {
    key: fs.readFileSync(job.tls.key),
    cert: fs.readFileSync(job.tls.cert),
    ca: fs.readFileSync(job.tls.ca),
    rejectUnauthorized: true,
  };
}

function sendOptions() {
  const opts = { associationTimeout: 10000, pduTimeout: 20000 };
  const tls = tlsOptions();
  if (tls) opts.securityOptions = tls;
  if (job.user_identity) {
    opts.userIdentity = {
      type: job.user_identity.type,
      positiveResponseRequested: !!job.user_identity.response,
      primaryField: job.user_identity.primary,
      secondaryField: job.user_identity.secondary || '',
    };
  }
  return opts;
}

// Our own SCP (the C-MOVE destination, the Storage Commitment report receiver): accepts every
// proposed context in an uncompressed syntax and records what arrives.
class RecordingScp extends Scp {
  associationRequested(association) {
    association.getPresentationContexts().forEach((c) => {
      const context = association.getPresentationContext(c.id);
      const syntaxes = context.getTransferSyntaxUids();
      const pick = [TransferSyntax.ExplicitVRLittleEndian, TransferSyntax.ImplicitVRLittleEndian]
        .find((s) => syntaxes.includes(s));
      if (pick) {
        context.setResult(PresentationContextResult.Accept, pick);
      } else {
        context.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
      }
    });
    this.sendAssociationAccept();
  }

  associationReleaseRequested() {
    this.sendAssociationReleaseResponse();
  }

  cStoreRequest(request, callback) {
    result.received.push(request.getDataset().getElements().SOPInstanceUID);
    const response = CStoreResponse.fromRequest(request);
    response.setStatus(Status.Success);
    callback(response);
  }

  nEventReportRequest(request, callback) {
    result.report = {
      event_type: request.getEventTypeId(),
      dataset: request.getDataset() ? request.getDataset().getElements() : null,
    };
    const response = NEventReportResponse.fromRequest(request);
    response.setStatus(Status.Success);
    callback(response);
    // Let the response go out and the release come in before we report and exit.
    setTimeout(finish, 300);
  }
}

function client() {
  const c = new Client();
  c.on('networkError', (e) => {
    result.errors.push('network: ' + String(e && e.message ? e.message : e));
    finish();
  });
  c.on('associationAccepted', (association) => {
    result.accepted = true;
    result.user_identity_response = association.getNegotiateUserIdentityServerResponse()
      ? association.getUserIdentityServerResponse() || ''
      : null;
  });
  c.on('associationRejected', (reject) => {
    result.errors.push('rejected: ' + JSON.stringify(reject));
    finish();
  });
  c.on('associationReleased', () => {
    result.released = true;
    if (job.op !== 'commit') finish();
  });
  return c;
}

function recordResponses(request) {
  request.on('response', (response) => {
    const entry = { status: response.getStatus() };
    if (typeof response.getCompleted === 'function') {
      entry.completed = response.getCompleted();
      entry.failures = response.getFailures();
      entry.remaining = response.getRemaining();
    }
    result.statuses.push(entry);
    if (response.hasDataset() && response.getStatus() === Status.Pending && job.op === 'find') {
      result.datasets.push(response.getDataset().getElements());
    }
  });
}

function listen(port) {
  const server = new Server(RecordingScp);
  server.on('networkError', (e) => result.errors.push('server: ' + String(e)));
  server.listen(port);
  return server;
}

function main() {
  const c = client();
  if (job.op === 'echo') {
    const request = new CEchoRequest();
    recordResponses(request);
    c.addRequest(request);
  } else if (job.op === 'store') {
    job.files.forEach((file) => {
      const request = new CStoreRequest(file);
      recordResponses(request);
      c.addRequest(request);
    });
  } else if (job.op === 'find') {
    const request = CFindRequest.createStudyFindRequest(job.keys);
    recordResponses(request);
    c.addRequest(request);
  } else if (job.op === 'move') {
    listen(job.listen_port);
    const request = CMoveRequest.createStudyMoveRequest(job.destination, job.study);
    recordResponses(request);
    c.addRequest(request);
  } else if (job.op === 'get') {
    const request = CGetRequest.createStudyGetRequest(job.study);
    recordResponses(request);
    c.on('cStoreRequest', (storeRequest, callback) => {
      result.received.push(storeRequest.getDataset().getElements().SOPInstanceUID);
      const response = CStoreResponse.fromRequest(storeRequest);
      response.setStatus(Status.Success);
      callback(response);
    });
    c.addRequest(request);
  } else if (job.op === 'commit') {
    listen(job.listen_port);
    const request = new NActionRequest(
      SopClass.StorageCommitmentPushModel, '1.2.840.10008.1.20.1.1', 1);
    request.setDataset(new Dataset({
      TransactionUID: job.transaction,
      ReferencedSOPSequence: job.refs.map(([cls, inst]) => ({
        ReferencedSOPClassUID: cls,
        ReferencedSOPInstanceUID: inst,
      })),
    }));
    recordResponses(request);
    c.addRequest(request);
  } else {
    throw new Error('unknown op ' + job.op);
  }
  c.send(job.host, job.port, job.calling, job.called, sendOptions());
}

main();
