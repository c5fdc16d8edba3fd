"""The GraphQL operations the Upwork plugin sends, one named operation each.

Only the fields Retainer reads are requested: Upwork's live schema drifts from its
docs, and an unknown field fails the whole query with a ``ValidationError`` (HTTP 200,
no data). Every operation is checked with graphql-core against the project's trimmed
copy of the live schema, :data:`SCHEMA_PATH` (``tests/plugins/upwork/test_schema.py``),
and against the full live schema when a copy is at hand
(``tests/conformance/upwork_schema.py``). Notably ``CurrentUser`` has no ``publicUrl``
(only ``GenericUser`` does) and ``RoomEdge`` has no ``cursor`` (rooms page through
``pageInfo.endCursor``; story edges do have one).
"""

from __future__ import annotations

from pathlib import Path

#: the trimmed SDL the operations are written against (package data)
SCHEMA_PATH = Path(__file__).with_name("schema.graphql")

VIEWER = """
query RetainerViewer {
  user { id name }
}
"""

_USER = "id name publicUrl"

ROOM_LIST = f"""
query RetainerRoomList($filter: RoomFilter, $pagination: Pagination, $sortOrder: SortOrder) {{
  roomList(filter: $filter, pagination: $pagination, sortOrder: $sortOrder) {{
    totalCount
    edges {{
      node {{
        id
        roomName
        topic
        roomType
        contractId
        offerIds
        createdAtDateTime
        roomUsers {{ user {{ {_USER} }} }}
        latestStory {{ id createdDateTime }}
      }}
    }}
    pageInfo {{ endCursor hasNextPage }}
  }}
}}
"""

ROOM_STORIES = f"""
query RetainerRoomStories($filter: RoomStoryFilter) {{
  roomStories(filter: $filter) {{
    totalCount
    edges {{
      cursor
      node {{
        id
        createdDateTime
        updatedDateTime
        message
        user {{ {_USER} }}
        attachments {{ objectReferenceId objectType metadata {{ key value }} createdDateTime }}
      }}
    }}
    pageInfo {{ endCursor hasNextPage }}
  }}
}}
"""

#: one story again by id (a download that failed is retried the next sync)
ROOM_STORY = f"""
query RetainerRoomStory($roomId: ID!, $storyId: ID!) {{
  roomStory(roomId: $roomId, storyId: $storyId) {{
    id
    createdDateTime
    updatedDateTime
    message
    user {{ {_USER} }}
    attachments {{ objectReferenceId objectType metadata {{ key value }} createdDateTime }}
  }}
}}
"""

_MONEY = "rawValue currency"

CONTRACTS = f"""
query RetainerContracts($ids: [ID!]) {{
  contractList(ids: $ids) {{
    contracts {{
      id
      title
      status
      kind
      createDate
      modifyDate
      startDate
      endDate
      offerId
      freelancer {{ id name }}
      terms {{
        hourlyTerms {{ id hourlyRate {{ {_MONEY} }} }}
        fixedPriceTerms {{
          id
          fixedAmount {{ {_MONEY} }}
          milestones {{
            id
            description
            state
            sequenceId
            dueDateTime
            depositAmount {{ {_MONEY} }}
            paid {{ {_MONEY} }}
            submissionCount
            submissionEvents {{
              submission {{ id createdDateTime amount {{ {_MONEY} }} }}
              submissionMessage {{ createdDateTime message }}
            }}
          }}
        }}
      }}
    }}
  }}
}}
"""

OFFER = f"""
query RetainerOffer($id: ID!) {{
  offer(id: $id) {{
    id
    title
    state
    type
    offerTerms {{
      hourlyTerms {{ rate {{ {_MONEY} }} }}
      fixedPriceTerm {{ budget {{ {_MONEY} }} }}
    }}
  }}
}}
"""

#: Post a message to a room (``Connector.send``). Upwork answers the new story.
SEND_STORY = """
mutation RetainerSendStory($input: RoomStoryCreateInputV2!) {
  createRoomStoryV2(input: $input) { id createdDateTime }
}
"""

#: contractList takes at most this many ids (live schema: "Max size is 10").
CONTRACT_BATCH = 10

OPERATIONS = {
    "RetainerViewer": VIEWER,
    "RetainerRoomList": ROOM_LIST,
    "RetainerRoomStories": ROOM_STORIES,
    "RetainerRoomStory": ROOM_STORY,
    "RetainerContracts": CONTRACTS,
    "RetainerOffer": OFFER,
    "RetainerSendStory": SEND_STORY,
}
