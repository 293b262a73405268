"""JSON Schemas (draft 2020-12) of Grafana's provisioning files, apiVersion 1.

Written from Grafana's provisioning documentation ("Provision Grafana": data
sources and dashboards) and the keys its config readers accept
(pkg/services/provisioning/{datasources,dashboards}/types.go). Grafana ignores
keys it does not know, so a misspelt key would silently do nothing: the
objects whose keys are fixed (the file, a data source, a delete entry, a
dashboard provider and its file options) allow no others. jsonData and
secureJsonData belong to the data source plugin and stay open.
"""

ORG = {
    "orgId": {"type": "integer", "minimum": 1},
    "orgName": {"type": "string"},
}

DATASOURCE = {
    "type": "object",
    "required": ["name", "type"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        # Grafana: at most 40 characters out of letters, digits, "-" and "_".
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        **ORG,
        "access": {"enum": ["proxy", "direct"]},
        "url": {"type": "string"},
        "user": {"type": "string"},
        "database": {"type": "string"},
        "basicAuth": {"type": "boolean"},
        "basicAuthUser": {"type": "string"},
        "withCredentials": {"type": "boolean"},
        "isDefault": {"type": "boolean"},
        "jsonData": {"type": "object"},
        "secureJsonData": {"type": "object", "additionalProperties": {"type": "string"}},
        "correlations": {"type": "array", "items": {"type": "object"}},
        "version": {"type": "integer", "minimum": 0},
        "editable": {"type": "boolean"},
        # Deprecated in favour of secureJsonData, still documented for old versions.
        "password": {"type": "string"},
        "basicAuthPassword": {"type": "string"},
    },
}

DATASOURCES = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Grafana data source provisioning file",
    "type": "object",
    "required": ["apiVersion"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"type": "integer", "const": 1},
        "datasources": {"type": "array", "items": DATASOURCE},
        "deleteDatasources": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string", "minLength": 1}, **ORG},
            },
        },
        # Remove provisioned data sources that are no longer in any file.
        "prune": {"type": "boolean"},
    },
}

PROVIDER = {
    "type": "object",
    "required": ["name", "type", "options"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "type": {"const": "file"},
        "orgId": {"type": "integer", "minimum": 1},
        "folder": {"type": "string"},
        "folderUid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,40}$"},
        "disableDeletion": {"type": "boolean"},
        "updateIntervalSeconds": {"type": "integer", "minimum": 0},  # 0: the default, 10
        "allowUiUpdates": {"type": "boolean"},
        "editable": {"type": "boolean"},  # superseded by allowUiUpdates
        "options": {
            "type": "object",
            "required": ["path"],
            "additionalProperties": False,
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "foldersFromFilesStructure": {"type": "boolean"},
            },
        },
    },
    # Folders named after the subdirectories: Grafana refuses a folder or folderUid then.
    "if": {
        "properties": {"options": {"properties": {"foldersFromFilesStructure": {"const": True}},
                                   "required": ["foldersFromFilesStructure"]}},
        "required": ["options"],
    },
    "then": {"properties": {"folder": {"const": ""}, "folderUid": {"const": ""}}},
}

DASHBOARDS = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Grafana dashboard provider provisioning file",
    "type": "object",
    "required": ["apiVersion", "providers"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"type": "integer", "const": 1},
        "providers": {"type": "array", "minItems": 1, "items": PROVIDER},
    },
}
