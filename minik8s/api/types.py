"""The typed API model: what minik8s reads and acts on, as ``TypedDict``s over the wire shape.

Objects travel and are stored as plain JSON dicts; these types only let mypy check the code that
reads them. Every class is ``total=False`` (any field may be absent) and keys are the JSON names,
so a dict round-trips every field, including fields minik8s does not model. :mod:`minik8s.api.schema`
reads these classes at run time: a field listed here is one minik8s acts on.

``KINDS`` maps each served kind to its top-level type.
"""

from __future__ import annotations

from typing import Any, TypedDict

# An IntOrString field (``targetPort: 8080`` or ``targetPort: http``).
IntOrString = int | str
# A quantity: ``"100m"``, ``"1Gi"``, or a bare JSON number.
Quantity = str | int | float


# --- meta --------------------------------------------------------------------------------------------


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    generateName: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str | None
    deletionTimestamp: str | None
    deletionGracePeriodSeconds: int
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]
    finalizers: list[str]


class LabelSelectorRequirement(TypedDict, total=False):
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: list[str]


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str]
    matchExpressions: list[LabelSelectorRequirement]


class Condition(TypedDict, total=False):
    """The condition shape shared by pods, nodes, deployments, functions (each uses a subset)."""

    type: str
    status: str  # "True", "False", "Unknown"
    reason: str
    message: str
    lastTransitionTime: str | None
    lastProbeTime: str | None
    lastHeartbeatTime: str | None
    lastUpdateTime: str | None
    observedGeneration: int


# --- Namespace ---------------------------------------------------------------------------------------


class NamespaceSpec(TypedDict, total=False):
    finalizers: list[str]


class NamespaceStatus(TypedDict, total=False):
    phase: str  # Active, Terminating
    conditions: list[Condition]


class Namespace(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: NamespaceSpec
    status: NamespaceStatus


# --- Node --------------------------------------------------------------------------------------------


class Taint(TypedDict, total=False):
    key: str
    value: str
    effect: str  # NoSchedule, PreferNoSchedule, NoExecute
    timeAdded: str | None


class NodeSpec(TypedDict, total=False):
    podCIDR: str
    podCIDRs: list[str]
    unschedulable: bool
    taints: list[Taint]


class NodeAddress(TypedDict, total=False):
    type: str  # InternalIP, Hostname, ...
    address: str


class NodeSystemInfo(TypedDict, total=False):
    machineID: str
    systemUUID: str
    bootID: str
    kernelVersion: str
    osImage: str
    containerRuntimeVersion: str
    kubeletVersion: str
    kubeProxyVersion: str
    operatingSystem: str
    architecture: str


class NodeStatus(TypedDict, total=False):
    conditions: list[Condition]
    addresses: list[NodeAddress]
    capacity: dict[str, Quantity]
    allocatable: dict[str, Quantity]
    nodeInfo: NodeSystemInfo


class Node(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: NodeSpec
    status: NodeStatus


# --- Pod ---------------------------------------------------------------------------------------------


class ObjectFieldSelector(TypedDict, total=False):
    apiVersion: str
    fieldPath: str


class ResourceFieldSelector(TypedDict, total=False):
    containerName: str
    resource: str
    divisor: Quantity


class EnvVarSource(TypedDict, total=False):
    fieldRef: ObjectFieldSelector
    resourceFieldRef: ResourceFieldSelector


class EnvVar(TypedDict, total=False):
    name: str
    value: str
    valueFrom: EnvVarSource


class ContainerPort(TypedDict, total=False):
    name: str
    containerPort: int
    hostPort: int
    hostIP: str
    protocol: str  # TCP, UDP, SCTP


class ResourceRequirements(TypedDict, total=False):
    requests: dict[str, Quantity]
    limits: dict[str, Quantity]


class VolumeMount(TypedDict, total=False):
    name: str
    mountPath: str
    readOnly: bool
    subPath: str


class HTTPHeader(TypedDict, total=False):
    name: str
    value: str


class HTTPGetAction(TypedDict, total=False):
    path: str
    port: IntOrString
    host: str
    scheme: str  # HTTP, HTTPS
    httpHeaders: list[HTTPHeader]


class TCPSocketAction(TypedDict, total=False):
    port: IntOrString
    host: str


class ExecAction(TypedDict, total=False):
    command: list[str]


class Probe(TypedDict, total=False):
    exec: ExecAction
    httpGet: HTTPGetAction
    tcpSocket: TCPSocketAction
    initialDelaySeconds: int
    periodSeconds: int
    timeoutSeconds: int
    failureThreshold: int
    successThreshold: int
    terminationGracePeriodSeconds: int


class SleepAction(TypedDict, total=False):
    seconds: int


class LifecycleHandler(TypedDict, total=False):
    exec: ExecAction
    httpGet: HTTPGetAction
    tcpSocket: TCPSocketAction
    sleep: SleepAction


class Lifecycle(TypedDict, total=False):
    preStop: LifecycleHandler


class Container(TypedDict, total=False):
    name: str
    image: str
    imagePullPolicy: str  # Always, IfNotPresent, Never
    command: list[str]
    args: list[str]
    workingDir: str
    env: list[EnvVar]
    ports: list[ContainerPort]
    resources: ResourceRequirements
    volumeMounts: list[VolumeMount]
    livenessProbe: Probe
    readinessProbe: Probe
    startupProbe: Probe
    lifecycle: Lifecycle
    terminationMessagePath: str
    terminationMessagePolicy: str
    restartPolicy: str  # init containers only: "Always" makes a sidecar


class EmptyDirVolumeSource(TypedDict, total=False):
    medium: str  # "" or "Memory"
    sizeLimit: Quantity


class HostPathVolumeSource(TypedDict, total=False):
    path: str
    type: str


class Volume(TypedDict, total=False):
    name: str
    emptyDir: EmptyDirVolumeSource
    hostPath: HostPathVolumeSource


class Toleration(TypedDict, total=False):
    key: str
    operator: str
    value: str
    effect: str
    tolerationSeconds: int


class PodSpec(TypedDict, total=False):
    containers: list[Container]
    initContainers: list[Container]
    volumes: list[Volume]
    restartPolicy: str  # Always, OnFailure, Never
    terminationGracePeriodSeconds: int
    activeDeadlineSeconds: int
    nodeName: str
    nodeSelector: dict[str, str]
    hostNetwork: bool
    dnsPolicy: str
    schedulerName: str
    tolerations: list[Toleration]
    hostname: str
    subdomain: str


class ContainerStateWaiting(TypedDict, total=False):
    reason: str
    message: str


class ContainerStateRunning(TypedDict, total=False):
    startedAt: str | None


class ContainerStateTerminated(TypedDict, total=False):
    exitCode: int
    signal: int
    reason: str
    message: str
    startedAt: str | None
    finishedAt: str | None
    containerID: str


class ContainerState(TypedDict, total=False):
    waiting: ContainerStateWaiting
    running: ContainerStateRunning
    terminated: ContainerStateTerminated


class ContainerStatus(TypedDict, total=False):
    name: str
    state: ContainerState
    lastState: ContainerState
    ready: bool
    restartCount: int
    image: str
    imageID: str
    containerID: str
    started: bool


class PodIP(TypedDict, total=False):
    ip: str


class PodStatus(TypedDict, total=False):
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    conditions: list[Condition]
    hostIP: str
    hostIPs: list[PodIP]
    podIP: str
    podIPs: list[PodIP]
    startTime: str | None
    reason: str
    message: str
    containerStatuses: list[ContainerStatus]
    initContainerStatuses: list[ContainerStatus]
    qosClass: str


class Pod(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class PodTemplateSpec(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PodSpec


# --- Service and Endpoints ---------------------------------------------------------------------------


class ServicePort(TypedDict, total=False):
    name: str
    protocol: str
    port: int
    targetPort: IntOrString
    nodePort: int
    appProtocol: str


class ServiceSpec(TypedDict, total=False):
    type: str  # ClusterIP, NodePort, LoadBalancer, ExternalName
    selector: dict[str, str]
    ports: list[ServicePort]
    clusterIP: str
    clusterIPs: list[str]
    sessionAffinity: str  # None, ClientIP
    externalName: str
    externalTrafficPolicy: str
    internalTrafficPolicy: str


class LoadBalancerIngress(TypedDict, total=False):
    ip: str
    hostname: str


class LoadBalancerStatus(TypedDict, total=False):
    ingress: list[LoadBalancerIngress]


class ServiceStatus(TypedDict, total=False):
    loadBalancer: LoadBalancerStatus
    conditions: list[Condition]


class Service(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: ServiceSpec
    status: ServiceStatus


class ObjectReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    fieldPath: str


class EndpointAddress(TypedDict, total=False):
    ip: str
    hostname: str
    nodeName: str
    targetRef: ObjectReference


class EndpointPort(TypedDict, total=False):
    name: str
    port: int
    protocol: str
    appProtocol: str


class EndpointSubset(TypedDict, total=False):
    addresses: list[EndpointAddress]
    notReadyAddresses: list[EndpointAddress]
    ports: list[EndpointPort]


class Endpoints(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    subsets: list[EndpointSubset]


# --- Event -------------------------------------------------------------------------------------------


class EventSource(TypedDict, total=False):
    component: str
    host: str


class Event(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    involvedObject: ObjectReference
    reason: str
    message: str
    type: str  # Normal, Warning
    count: int
    firstTimestamp: str | None
    lastTimestamp: str | None
    eventTime: str | None
    source: EventSource
    reportingComponent: str
    reportingInstance: str
    action: str


# --- ReplicaSet and Deployment -----------------------------------------------------------------------


class ReplicaSetSpec(TypedDict, total=False):
    replicas: int
    minReadySeconds: int
    selector: LabelSelector
    template: PodTemplateSpec


class ReplicaSetStatus(TypedDict, total=False):
    replicas: int
    fullyLabeledReplicas: int
    readyReplicas: int
    availableReplicas: int
    observedGeneration: int
    conditions: list[Condition]


class ReplicaSet(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: ReplicaSetSpec
    status: ReplicaSetStatus


class RollingUpdateDeployment(TypedDict, total=False):
    maxSurge: IntOrString
    maxUnavailable: IntOrString


class DeploymentStrategy(TypedDict, total=False):
    type: str  # RollingUpdate, Recreate
    rollingUpdate: RollingUpdateDeployment


class DeploymentSpec(TypedDict, total=False):
    replicas: int
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy
    minReadySeconds: int
    revisionHistoryLimit: int
    progressDeadlineSeconds: int
    paused: bool


class DeploymentStatus(TypedDict, total=False):
    observedGeneration: int
    replicas: int
    updatedReplicas: int
    readyReplicas: int
    availableReplicas: int
    unavailableReplicas: int
    conditions: list[Condition]
    collisionCount: int


class Deployment(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: DeploymentSpec
    status: DeploymentStatus


# --- HorizontalPodAutoscaler (autoscaling/v2) ------------------------------------------------------


class CrossVersionObjectReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str


class MetricTarget(TypedDict, total=False):
    type: str  # Utilization, AverageValue, Value
    averageUtilization: int
    averageValue: Quantity
    value: Quantity


class ResourceMetricSource(TypedDict, total=False):
    name: str  # cpu, memory
    target: MetricTarget


class MetricSpec(TypedDict, total=False):
    type: str  # Resource (others are stored, not acted on)
    resource: ResourceMetricSource


class HPAScalingPolicy(TypedDict, total=False):
    type: str  # Pods, Percent
    value: int
    periodSeconds: int


class HPAScalingRules(TypedDict, total=False):
    stabilizationWindowSeconds: int
    selectPolicy: str  # Max, Min, Disabled
    policies: list[HPAScalingPolicy]


class HorizontalPodAutoscalerBehavior(TypedDict, total=False):
    scaleUp: HPAScalingRules
    scaleDown: HPAScalingRules


class HorizontalPodAutoscalerSpec(TypedDict, total=False):
    scaleTargetRef: CrossVersionObjectReference
    minReplicas: int
    maxReplicas: int
    metrics: list[MetricSpec]
    behavior: HorizontalPodAutoscalerBehavior


class MetricValueStatus(TypedDict, total=False):
    averageUtilization: int
    averageValue: Quantity
    value: Quantity


class ResourceMetricStatus(TypedDict, total=False):
    name: str
    current: MetricValueStatus


class MetricStatus(TypedDict, total=False):
    type: str
    resource: ResourceMetricStatus


class HorizontalPodAutoscalerStatus(TypedDict, total=False):
    observedGeneration: int
    lastScaleTime: str | None
    currentReplicas: int
    desiredReplicas: int
    currentMetrics: list[MetricStatus]
    conditions: list[Condition]


class HorizontalPodAutoscaler(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: HorizontalPodAutoscalerSpec
    status: HorizontalPodAutoscalerStatus


# --- Ingress (networking.k8s.io/v1) ----------------------------------------------------------------


class ServiceBackendPort(TypedDict, total=False):
    name: str
    number: int


class IngressServiceBackend(TypedDict, total=False):
    name: str
    port: ServiceBackendPort


class IngressBackend(TypedDict, total=False):
    service: IngressServiceBackend


class HTTPIngressPath(TypedDict, total=False):
    path: str
    pathType: str  # Exact, Prefix, ImplementationSpecific
    backend: IngressBackend


class HTTPIngressRuleValue(TypedDict, total=False):
    paths: list[HTTPIngressPath]


class IngressRule(TypedDict, total=False):
    host: str
    http: HTTPIngressRuleValue


class IngressSpec(TypedDict, total=False):
    ingressClassName: str
    defaultBackend: IngressBackend
    rules: list[IngressRule]


class IngressStatus(TypedDict, total=False):
    loadBalancer: LoadBalancerStatus


class Ingress(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: IngressSpec
    status: IngressStatus


# --- minik8s.io/v1 Function and Workflow -----------------------------------------------------------


class FunctionSpec(TypedDict, total=False):
    runtime: str  # "python"
    codeDigest: str  # "sha256:<hex>" of the uploaded code blob in the registry
    entryPoint: str  # the function called in the user's module
    env: list[EnvVar]
    resources: ResourceRequirements
    minScale: int
    maxScale: int
    targetConcurrency: int  # in-flight requests per pod the autoscaler aims at
    idleTimeout: int | float  # seconds without requests before scaling to zero
    timeout: int | float  # seconds one invocation may run


class FunctionStatus(TypedDict, total=False):
    """Written by the function controller, except ``desiredScale`` and ``lastActiveTime`` (the autoscaler's)."""

    codeDigest: str  # the code that ``image`` was built from
    image: str  # HOST:PORT/minik8s-functions/NS/NAME@sha256:... (pinned by digest)
    replicas: int
    readyReplicas: int
    desiredScale: int
    lastActiveTime: str | None  # RFC 3339
    conditions: list[Condition]  # Built, Ready
    url: str
    observedGeneration: int


class Function(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: FunctionSpec
    status: FunctionStatus


# One function call. ``async`` is a Python keyword, hence the functional TypedDict form.
ActivationSpec = TypedDict("ActivationSpec", {
    "function": str,  # the Function's name (same namespace)
    "start": str,  # RFC 3339 with microseconds
    "durationMs": float,  # gateway-measured
    "initMs": float,  # time held waiting for a cold instance; 0 when warm
    "status": str,  # success, error, bad-request, timeout, unavailable
    "statusCode": int,
    "result": str,  # the response body, at most ACTIVATION_RESULT_CHARS
    "truncated": bool,
    "logs": str,  # captured stdout+stderr, at most ACTIVATION_LOGS_CHARS
    "pod": str,
    "async": bool,
}, total=False)


class Activation(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: ActivationSpec


class WorkflowSpec(TypedDict, total=False):
    """The state machine (docs/workflows.md, "Language"); :mod:`minik8s.workflow` validates the states."""

    startAt: str
    # State name → state. The states' own fields are checked by minik8s.workflow.validate (which
    # reports unknown ones per state type), so the schema walk treats them as free-form here.
    states: dict[str, dict[str, Any]]
    timeoutSeconds: int | float


class WorkflowStatus(TypedDict, total=False):
    conditions: list[Condition]
    observedGeneration: int


class Workflow(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: WorkflowSpec
    status: WorkflowStatus


class WorkflowExecutionSpec(TypedDict, total=False):
    workflow: str  # the Workflow's name (same namespace)
    input: Any
    definition: WorkflowSpec  # a copy of the Workflow's spec when the execution started


class WorkflowTraceEntry(TypedDict, total=False):
    state: str
    branch: str  # "" at top level, e.g. "Fan[1]" inside a Parallel branch
    type: str
    status: str  # Running, Succeeded, Failed, Caught, Retrying
    attempt: int
    startTime: str
    endTime: str
    input: Any
    output: Any
    error: str
    cause: str
    activationId: str


class WorkflowExecutionStatus(TypedDict, total=False):
    """Written through ``/status`` by the gateway's workflow driver after every step."""

    phase: str  # Pending, Running, Succeeded, Failed
    startTime: str
    completionTime: str
    output: Any
    error: str
    cause: str
    current: list[Any]  # the state(s) in progress, with their branch path
    waitUntil: str  # RFC 3339, for a Wait in progress
    trace: list[WorkflowTraceEntry]
    observedGeneration: int


class WorkflowExecution(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: WorkflowExecutionSpec
    status: WorkflowExecutionStatus


class TriggerSpec(TypedDict, total=False):
    schedule: str  # "@every 2s" or a 6-field cron (seconds first); absent: fired only by POST


class TriggerStatus(TypedDict, total=False):
    lastFireTime: str
    fireCount: int
    nextFireTime: str


class Trigger(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: TriggerSpec
    status: TriggerStatus


class RuleSpec(TypedDict, total=False):
    trigger: str  # the Trigger's name (same namespace)
    function: str  # exactly one of function / workflow
    workflow: str
    enabled: bool  # default true


class Rule(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: RuleSpec


KINDS: dict[str, type] = {
    "Namespace": Namespace,
    "Node": Node,
    "Pod": Pod,
    "Service": Service,
    "Endpoints": Endpoints,
    "Event": Event,
    "ReplicaSet": ReplicaSet,
    "Deployment": Deployment,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "Ingress": Ingress,
    "Function": Function,
    "Activation": Activation,
    "Workflow": Workflow,
    "WorkflowExecution": WorkflowExecution,
    "Trigger": Trigger,
    "Rule": Rule,
}
