{{/*
scsync.component renders the Secret (unless existingSecret), Deployment,
Service and PodDisruptionBudget of one component.
Argument: dict "root" $ "name" "sc-cloud" "c" .Values.scCloud
*/}}
{{- define "scsync.component" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $name := printf "%s-%s" (include "scsync.fullname" $root) .name -}}
{{- $secret := $c.existingSecret | default $name -}}
{{- if not $c.existingSecret }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "scsync.labels" $root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
type: Opaque
stringData:
  {{- range $k, $v := $c.secret }}
  {{ $k }}: {{ $v | toString | quote }}
  {{- end }}
{{- end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "scsync.labels" $root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
    app.kubernetes.io/version: {{ include "scsync.tag" $root | quote }}
spec:
  replicas: {{ $c.replicas }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ $root.Release.Name }}
      app.kubernetes.io/name: {{ .name }}
  template:
    metadata:
      labels:
        {{- include "scsync.labels" $root | nindent 8 }}
        app.kubernetes.io/name: {{ .name }}
      annotations:
        checksum/values: {{ toJson $c | sha256sum | trunc 16 | quote }}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .name }}
          image: {{ printf "%s%s:%s" $root.Values.image.registry $c.image (include "scsync.tag" $root) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $c.port }}
              protocol: TCP
          env:
            {{- range $k, $v := $c.env }}
            {{- if ne (toString $v) "" }}
            - name: {{ $k }}
              value: {{ $v | toString | quote }}
            {{- end }}
            {{- end }}
          envFrom:
            - secretRef:
                name: {{ $secret }}
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 3
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            initialDelaySeconds: 10
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 6
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: tmp
          emptyDir: {}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $c.affinity }}
      affinity:
        {{- toYaml $c.affinity | nindent 8 }}
      {{- else }}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    app.kubernetes.io/instance: {{ $root.Release.Name }}
                    app.kubernetes.io/name: {{ .name }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "scsync.labels" $root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
spec:
  type: {{ $c.service.type }}
  selector:
    app.kubernetes.io/instance: {{ $root.Release.Name }}
    app.kubernetes.io/name: {{ .name }}
  ports:
    - name: http
      port: {{ $c.port }}
      targetPort: http
      protocol: TCP
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "scsync.labels" $root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
spec:
  minAvailable: {{ $c.pdb.minAvailable }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ $root.Release.Name }}
      app.kubernetes.io/name: {{ .name }}
{{- end -}}
