/**
 * The stand-in API server (test/helpers/apiserver.ts) answers exactly as the real kube-apiserver v1.36.2
 * did (test/fixtures/kubernetes-1.36/): the same TokenReview request gives the same answer, field for
 * field, for the authenticated, wrong-audience and pod-deleted cases, and the ServiceAccount GET returns
 * the captured object. What the other tests learn from the stand-in therefore holds for the real one.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  fixtureClaims,
  K8S_NOW,
  k8sJson,
  type StandInApiServer,
  startStandInApiServer,
} from "../helpers/apiserver.js";

let api: StandInApiServer | undefined;
afterEach(async () => {
  await api?.close();
  api = undefined;
});

async function post(body: unknown, userAgent = "curl/8.5.0") {
  const res = await fetch(`${api!.url}/apis/authentication.k8s.io/v1/tokenreviews`, {
    method: "POST",
    headers: { "content-type": "application/json", "user-agent": userAgent },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as unknown };
}

describe("stand-in kube-apiserver vs the real v1.36.2 captures", () => {
  it("answers the captured TokenReview request with the captured authenticated answer", async () => {
    api = await startStandInApiServer(() => K8S_NOW);
    const res = await post(k8sJson("tokenreview-request.json"));
    expect(res.status).toBe(201);
    expect(res.body).toEqual(k8sJson("tokenreview-authenticated.json"));
  });

  it("answers the same token reviewed for another audience with the captured wrong-audience answer", async () => {
    api = await startStandInApiServer(() => K8S_NOW);
    const request = k8sJson<{ spec: Record<string, unknown> }>("tokenreview-request.json");
    request.spec.audiences = ["registry.test"];
    const res = await post(request);
    expect(res.body).toEqual(k8sJson("tokenreview-wrong-audience.json"));
  });

  it("answers after the pod's deletion with the captured invalidated answer (20 s later)", async () => {
    api = await startStandInApiServer(() => K8S_NOW + 20_000);
    const pod = (
      fixtureClaims("sa-token-credential-provider-audience.jwt")["kubernetes.io"] as {
        pod: { uid: string };
      }
    ).pod;
    api.deletePod(pod.uid);
    const res = await post(k8sJson("tokenreview-request.json"));
    expect(res.body).toEqual(k8sJson("tokenreview-pod-deleted.json"));
  });

  it("serves the captured ServiceAccount and a metav1.Status 404 for a missing one", async () => {
    api = await startStandInApiServer();
    const sa = await fetch(`${api.url}/api/v1/namespaces/team-a/serviceaccounts/builder`);
    expect(sa.status).toBe(200);
    expect(await sa.json()).toEqual(k8sJson("serviceaccount.json"));
    const missing = await fetch(`${api.url}/api/v1/namespaces/team-a/serviceaccounts/nobody`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'serviceaccounts "nobody" not found',
      reason: "NotFound",
      details: { name: "nobody", kind: "serviceaccounts" },
      code: 404,
    });
  });

  it("the captured tokens carry the service account uid of the captured ServiceAccount", () => {
    const uid = (k8sJson("serviceaccount.json").metadata as { uid: string }).uid;
    for (const f of [
      "sa-token-pod-bound.jwt",
      "sa-token-registry-audience.jwt",
      "sa-token-credential-provider-audience.jwt",
      "sa-token-other-audience.jwt",
    ]) {
      const k = fixtureClaims(f)["kubernetes.io"] as { serviceaccount: { uid: string } };
      expect(k.serviceaccount.uid, f).toBe(uid);
    }
  });
});
